//! apptag: capture packets and tag each one with the local application that sent or
//! received it.
//!
//! Data flows one way: [`capture`] -> [`attribution`] (merge) -> [`pcapng`] writer; the
//! offline side reads files back through [`pcapng`] into [`report`].

pub mod attribution;
pub mod capture;
pub mod dissect;
pub mod model;
pub mod pcapng;
pub mod pipeline;
pub mod probes;
pub mod report;
pub mod status;
pub mod sys;
