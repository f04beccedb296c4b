//! Flow records for fleets: every socket of every application in a capture, as one record
//! in Elastic Common Schema names ([`record`]), encoded as NDJSON, ClickHouse rows or
//! Parquet ([`encode`]), sent to files, TCP, HTTP or ClickHouse ([`sink`]), from finished
//! captures ([`offline`]) or live from the sensor ([`live`]) on a tokio runtime of its own.
//! docs/EXPORT.md documents the fields; docs/FLEET.md how a fleet is wired.
pub mod encode;
pub mod live;
pub mod offline;
pub mod record;
pub mod sink;

pub use live::{CountersSnapshot, ExportCounters, ExportHandle, Exporter, LiveConfig};
pub use record::{FlowRecord, community_id};
pub use sink::Target;

/// Everything that can go wrong exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Capture(#[from] crate::pcapng::PcapngError),
    #[error("cannot build the Parquet columns: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(
        "bad export target {target:?}: {why} (give -, file:PATH.ndjson, file:PATH.parquet, \
         tcp://HOST:PORT, http://HOST:PORT/PATH or clickhouse://HOST:PORT/DB.TABLE)"
    )]
    Target { target: String, why: String },
    #[error("{target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target} answered {status}: {body}")]
    Http {
        target: String,
        status: String,
        body: String,
    },
    #[error("{target} did not answer within {seconds} s")]
    Timeout { target: String, seconds: u64 },
    #[error("cannot start the export runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
