//! Offline stream analysis (the qcap design): read -> dissect -> defragment -> reassemble
//! -> subscribers (and, later, protocol parsers). Every stream is tied to the local
//! application and process that owned it, from apptag's per-packet process ids.
//!
//! Layers, each feeding the next:
//! - [`defrag`]: IPv4/IPv6 defragmentation with per-destination reassembly policies;
//! - [`prefix`]: longest-prefix tables that pick a policy per destination host.
pub mod defrag;
pub mod prefix;
