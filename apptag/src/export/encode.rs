//! The encodings of a batch of ECS records: NDJSON lines, ClickHouse JSONEachRow rows (flat
//! dotted column names, as ClickHouse 18 takes them) and Parquet files (nested columns,
//! so Spark and DuckDB address them as `process.name`).
use std::{path::Path, sync::Arc};

use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::{Map, Value};

use super::ExportError;

/// One line per record, each a JSON object ending in `\n`.
pub fn ndjson(records: &[Value], out: &mut Vec<u8>) {
    for r in records {
        // Serialising a Value into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, r).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The columns of the ClickHouse table: ECS names, flat. Dates are `DateTime('UTC')`
/// (seconds; ClickHouse 18 has no sub-second type); `event.duration` keeps nanoseconds.
/// ClickHouse takes dotted array columns for a Nested structure whose arrays must have one
/// length, so ECS's keyword arrays are joined with `,` and `process.args` is left to
/// `process.command_line`.
pub const CLICKHOUSE_COLUMNS: &[(&str, &str)] = &[
    ("@timestamp", "DateTime('UTC')"),
    ("event.id", "String"),
    ("event.kind", "String"),
    ("event.category", "String"),
    ("event.type", "String"),
    ("event.start", "DateTime('UTC')"),
    ("event.end", "DateTime('UTC')"),
    ("event.duration", "UInt64"),
    ("host.name", "String"),
    ("source.ip", "String"),
    ("source.port", "UInt16"),
    ("source.packets", "UInt64"),
    ("source.bytes", "UInt64"),
    ("destination.ip", "String"),
    ("destination.port", "UInt16"),
    ("destination.packets", "UInt64"),
    ("destination.bytes", "UInt64"),
    ("network.transport", "String"),
    ("network.iana_number", "String"),
    ("network.type", "String"),
    ("network.direction", "String"),
    ("network.packets", "UInt64"),
    ("network.bytes", "UInt64"),
    ("network.community_id", "String"),
    ("process.pid", "UInt32"),
    ("process.name", "String"),
    ("process.executable", "String"),
    ("process.command_line", "String"),
    ("process.parent.pid", "UInt32"),
    ("process.start", "DateTime('UTC')"),
    ("user.id", "String"),
    ("user.name", "String"),
    ("container.id", "String"),
    ("apptag.flow_id", "String"),
    ("apptag.sequence", "UInt32"),
    ("apptag.final", "UInt8"),
    ("apptag.provenance", "String"),
    ("apptag.attributed", "DateTime('UTC')"),
    ("apptag.cookie", "UInt64"),
    ("apptag.cgroup", "String"),
    ("apptag.capture.file", "String"),
    ("apptag.capture.first_ns", "UInt64"),
    ("apptag.capture.last_ns", "UInt64"),
];

fn is_date(col: &str) -> bool {
    CLICKHOUSE_COLUMNS
        .iter()
        .any(|(c, t)| *c == col && t.starts_with("DateTime"))
}

/// `CREATE TABLE` for `db.table`. ReplacingMergeTree keeps, per flow, the record with the
/// latest totals (`apptag.capture.last_ns` is the version), so replayed duplicates and
/// interim records fold away; `SELECT ... FINAL` sees only those.
pub fn clickhouse_ddl(db: &str, table: &str) -> String {
    let cols: Vec<String> = CLICKHOUSE_COLUMNS
        .iter()
        .map(|(c, t)| format!("    `{c}` {t}"))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS `{db}`.`{table}`\n(\n{}\n)\nENGINE = \
         ReplacingMergeTree(`apptag.capture.last_ns`)\nPARTITION BY toYYYYMM(`event.start`)\n\
         ORDER BY (`host.name`, `apptag.flow_id`)\n",
        cols.join(",\n")
    )
}

fn flatten_into(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&key, v, out);
            }
        }
        Value::Array(_) if prefix == "process.args" => {}
        Value::Array(a) => {
            let words: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            out.insert(prefix.to_string(), Value::from(words.join(",")));
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), Value::from(u8::from(*b)));
        }
        Value::String(s) if is_date(prefix) => {
            // "2026-12-02T02:44:42.123456789Z" -> "2026-12-02 02:44:42", ClickHouse's
            // DateTime text.
            let t = s.get(..19).unwrap_or(s).replace('T', " ");
            out.insert(prefix.to_string(), Value::from(t));
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// One ECS record as a ClickHouse JSONEachRow row.
pub fn clickhouse_row(record: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    flatten_into("", record, &mut m);
    m
}

/// JSONEachRow body of an `INSERT`.
pub fn clickhouse_rows(records: &[Value], out: &mut Vec<u8>) {
    for r in records {
        if serde_json::to_writer(&mut *out, &clickhouse_row(r)).is_ok() {
            out.push(b'\n');
        }
    }
}

/// Microseconds: Spark refuses Parquet TIMESTAMP(NANOS); `apptag.capture.first_ns/last_ns`
/// keep the nanoseconds.
fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

fn strct(fields: Vec<Field>) -> DataType {
    DataType::Struct(Fields::from(fields))
}

fn f(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}

fn list_utf8() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn endpoint() -> DataType {
    strct(vec![
        f("ip", DataType::Utf8),
        f("port", DataType::Int32),
        f("packets", DataType::Int64),
        f("bytes", DataType::Int64),
    ])
}

/// The Parquet files' schema: the ECS record, nested.
pub fn arrow_schema() -> Arc<Schema> {
    use DataType::{Boolean, Int64, UInt64, Utf8};
    Arc::new(Schema::new(vec![
        f("@timestamp", ts()),
        f(
            "event",
            strct(vec![
                f("id", Utf8),
                f("kind", Utf8),
                f("category", list_utf8()),
                f("type", list_utf8()),
                f("start", ts()),
                f("end", ts()),
                f("duration", Int64),
            ]),
        ),
        f("host", strct(vec![f("name", Utf8)])),
        f("source", endpoint()),
        f("destination", endpoint()),
        f(
            "network",
            strct(vec![
                f("transport", Utf8),
                f("iana_number", Utf8),
                f("type", Utf8),
                f("direction", Utf8),
                f("packets", Int64),
                f("bytes", Int64),
                f("community_id", Utf8),
            ]),
        ),
        f(
            "process",
            strct(vec![
                f("pid", Int64),
                f("name", Utf8),
                f("executable", Utf8),
                f("command_line", Utf8),
                f("args", list_utf8()),
                f("parent", strct(vec![f("pid", Int64)])),
                f("start", ts()),
            ]),
        ),
        f("user", strct(vec![f("id", Utf8), f("name", Utf8)])),
        f("container", strct(vec![f("id", Utf8)])),
        f(
            "apptag",
            strct(vec![
                f("flow_id", Utf8),
                f("sequence", Int64),
                f("final", Boolean),
                f("provenance", Utf8),
                f("attributed", ts()),
                f("cookie", UInt64),
                f("cgroup", Utf8),
                f(
                    "capture",
                    strct(vec![
                        f("file", Utf8),
                        f("first_ns", Int64),
                        f("last_ns", Int64),
                    ]),
                ),
            ]),
        ),
    ]))
}

/// Writes `records` as one Parquet file at `path` (through a temporary name, so a reader
/// never sees half a file).
pub fn write_parquet(path: &Path, records: &[Value]) -> Result<(), ExportError> {
    let io = |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    };
    let schema = arrow_schema();
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    for chunk in records.chunks(8192) {
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone()).build_decoder()?;
        decoder.serialize(chunk)?;
        if let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
    }
    writer.close()?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        export::record::FlowRecord,
        model::{AppRecord, Provenance, SocketRecord},
    };

    fn sample() -> Value {
        let s = SocketRecord {
            local_addr: "10.1.0.1".parse().unwrap(),
            local_port: 40000,
            remote_addr: "10.1.0.2".parse().unwrap(),
            remote_port: 80,
            protocol: 6,
            first_ns: 1_700_000_000_000_000_000,
            last_ns: 1_700_000_001_000_000_000,
            packets_in: 3,
            packets_out: 4,
            bytes_in: 300,
            bytes_out: 400,
            cookie: 77,
            pid: 42,
            provenance: Provenance::SockDiag,
            attributed_ns: 1_700_000_000_000_000_001,
        };
        let app = AppRecord {
            name: "curl".into(),
            exe: "/usr/bin/curl".into(),
            cgroup: "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into(),
            cmdline: vec!["curl".into(), "-s".into()],
            pids: vec![42],
            sockets: vec![s.clone()],
            ..AppRecord::default()
        };
        FlowRecord::new("h1", "a.pcapng", &app, &s, None).to_ecs()
    }

    #[test]
    fn every_clickhouse_key_is_a_column() {
        let row = clickhouse_row(&sample());
        for k in row.keys() {
            assert!(
                CLICKHOUSE_COLUMNS.iter().any(|(c, _)| c == k),
                "{k} has no column in the DDL"
            );
        }
        assert_eq!(row["apptag.final"], Value::from(1));
        assert_eq!(row["event.start"], Value::from("2023-11-14 22:13:20"));
        assert_eq!(row["container.id"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn parquet_takes_every_field() {
        let dir = std::env::temp_dir().join(format!("apptag-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.parquet");
        write_parquet(&p, &[sample(), sample()]).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
