//! `apptag export`: flow records of finished captures, as NDJSON, Parquet or ClickHouse rows.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use apptag::export::{
    Target, encode,
    offline::{file_label, host_name, records_of_file},
    sink::{Sender, runtime},
};

/// Write the flow records (one per socket of each application, in ECS names) of capture
/// files written by apptag: NDJSON, Parquet files or ClickHouse rows. docs/EXPORT.md lists
/// the fields.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// pcapng files written by apptag.
    #[arg(required_unless_present = "clickhouse_ddl")]
    pub files: Vec<PathBuf>,
    /// NDJSON to this file (`-` for standard output).
    #[arg(long, value_name = "PATH|-")]
    pub ndjson: Option<String>,
    /// One Parquet file per capture file into this directory (NAME.parquet for NAME.pcapng).
    #[arg(long, value_name = "DIR")]
    pub parquet: Option<PathBuf>,
    /// Insert into ClickHouse over its HTTP interface: clickhouse://HOST:PORT/DB.TABLE (or
    /// http://HOST:PORT/DB.TABLE). The table must exist: see --clickhouse-ddl.
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// Print the CREATE TABLE statement for the ClickHouse table (of --clickhouse, or
    /// apptag.flows) and exit.
    #[arg(long)]
    pub clickhouse_ddl: bool,
    /// host.name of the records (default: this machine's name, as the sensor writes it).
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
    /// Records per ClickHouse INSERT.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub batch: usize,
}

fn clickhouse_target(url: &str) -> Result<Target> {
    let url = url
        .strip_prefix("http://")
        .map_or_else(|| url.to_string(), |rest| format!("clickhouse://{rest}"));
    let t = Target::parse(&url)?;
    if !matches!(t, Target::ClickHouse { .. }) {
        bail!("--clickhouse takes clickhouse://HOST:PORT/DB.TABLE, not {url}");
    }
    Ok(t)
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let ch = args
        .clickhouse
        .as_deref()
        .map(clickhouse_target)
        .transpose()?;
    if args.clickhouse_ddl {
        let (db, table) = match &ch {
            Some(Target::ClickHouse { db, table, .. }) => (db.as_str(), table.as_str()),
            _ => ("apptag", "flows"),
        };
        print!("{}", encode::clickhouse_ddl(db, table));
        return Ok(());
    }
    if args.ndjson.is_none() && args.parquet.is_none() && ch.is_none() {
        bail!("say where the records go: --ndjson PATH|-, --parquet DIR or --clickhouse URL");
    }
    let ndjson = match args.ndjson.as_deref() {
        Some("-") => Some(Target::Stdout),
        Some(p) => {
            // A fresh file, not appended to an older export.
            std::fs::write(p, b"").with_context(|| format!("cannot create {p}"))?;
            Some(Target::Ndjson(p.into()))
        }
        None => None,
    };
    if let Some(dir) = &args.parquet {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let host = args.host_name.clone().unwrap_or_else(host_name);
    let rt = runtime()?;
    let mut ndjson = ndjson.map(Sender::new);
    let mut ch = ch.map(Sender::new);
    let mut total = 0usize;
    for path in &args.files {
        let got = records_of_file(path, &host)?;
        for p in &got.problems {
            log::warn!("{}: {p}", path.display());
        }
        if !got.complete {
            log::warn!(
                "{}: no final application table (was the sensor killed?): the totals are \
                 those of its last periodic table",
                path.display()
            );
        }
        let values: Vec<_> = got.records.iter().map(|r| r.to_ecs()).collect();
        rt.block_on(async {
            if let Some(s) = ndjson.as_mut() {
                s.send(&values).await?;
            }
            if let Some(s) = ch.as_mut() {
                for chunk in values.chunks(args.batch.max(1)) {
                    s.send(chunk).await?;
                }
            }
            anyhow::Ok(())
        })?;
        if let Some(dir) = &args.parquet {
            let label = file_label(path);
            let stem = label.strip_suffix(".pcapng").unwrap_or(&label);
            encode::write_parquet(&dir.join(format!("{stem}.parquet")), &values)?;
        }
        total += values.len();
    }
    eprintln!("{total} flow records from {} files", args.files.len());
    Ok(())
}
