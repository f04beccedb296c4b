//! The live sensor: kernel programs and their events ([`probes`]), AF_PACKET rings
//! ([`capture`]), socket-to-process attribution ([`attribution`]) and the
//! capture -> merge/tag -> write pipeline ([`pipeline`]) that feeds the pcapng writer.
pub mod attribution;
pub mod capture;
pub mod pipeline;
pub mod probes;
pub mod status;
