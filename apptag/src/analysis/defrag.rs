//! IPv4 and IPv6 defragmentation with target-based reassembly policies.
