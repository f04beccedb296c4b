#![no_std]
// Exists so that `apptag` can declare a build-dependency on this crate (cargo needs a lib
// target for that); the programs themselves live in the `apptag` binary target.
