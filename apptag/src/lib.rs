//! apptag: capture packets and tag each one with the local application that sent or
//! received it.
//!
//! The module tree shows the layers, and data flows one way through them:
//! - [`sensor`]: capture -> merge/tag (attribution) -> write, live;
//! - [`pcapng`]: the file format, written by the sensor and read by everything offline;
//! - [`dissect`]: the one frame dissector and [`dissect::FiveTuple`], shared by all layers;
//! - [`analysis`]: read -> dissect -> defragment -> reassemble -> subscribers -> protocol
//!   parsers, per stream;
//! - [`report`]: read -> dissect -> aggregate per application -> render;
//! - [`export`]: application records -> ECS flow records -> NDJSON, Parquet, ClickHouse.

pub mod analysis;
pub mod bytes;
pub mod dissect;
pub mod export;
pub mod model;
pub mod pcapng;
pub mod privileges;
pub mod report;
pub mod sensor;
pub mod sys;
pub mod units;
