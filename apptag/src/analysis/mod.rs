//! Offline stream analysis (the qcap design): read -> dissect -> defragment -> reassemble
//! -> subscribers -> protocol parsers. Every stream is tied to the local
//! application and process that owned it, from apptag's per-packet process ids.
//!
//! Layers, each feeding the next:
//! - [`defrag`]: IPv4/IPv6 defragmentation with per-destination reassembly policies;
//! - [`prefix`]: longest-prefix tables that pick a policy per destination host;
//! - [`tcp`]: TCP segments into the ordered byte stream each receiver read (overlap
//!   policies, gaps, limits), UDP flows into streams of datagrams, numbered as tshark does;
//! - [`stream`]: the streams themselves, read through positions, every byte traceable to
//!   its frames;
//! - [`apps`]: the application and process of each stream, on apptag's tagged files;
//! - [`subscribe`]: the driver over a file and the subscriber API that parsers plug into;
//! - [`parse`]: protocol parsers (a registry behind one trait) reporting elements;
//! - [`creds`], [`fields`]: credentials per host and field getters, built on the parsers.
pub mod apps;
pub mod creds;
pub mod defrag;
pub mod fields;
mod frames;
pub mod parse;
pub mod prefix;
pub mod shard;
pub mod stream;
pub mod subscribe;
pub mod tcp;

pub use stream::{Cursor, Dir, HalfStream, Position, Stream, StreamId, Transport};
pub use subscribe::{
    AnalysisConfig, AnalysisError, PacketEvent, State, States, Subscriber, Summary, analyze_bytes,
    analyze_file,
};
pub use tcp::{OverlapPolicy, ReassemblyConfig, ReassemblyStats};
