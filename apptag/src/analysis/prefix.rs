//! Longest-prefix-match tables: a value (a reassembly policy) per destination prefix.
