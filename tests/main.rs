//! Capsule's integration tests: one binary, one module per concern.

mod common;

mod certificate;
mod cli;
mod crash;
mod fork;
mod import;
mod roundtrip;
mod sync_protocol;
mod schema_doc;
mod tamper;
mod vectors;
mod zip215;
