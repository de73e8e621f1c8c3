//! Capsule's integration tests: one binary, one module per concern.

mod common;

mod browser;
mod certificate;
mod cli;
mod crash;
mod damaged_store;
mod doctor;
mod fediverse;
mod fediverse_hostile;
mod fork;
mod hostile_http;
mod https_acme;
mod identity;
mod import;
mod mesh;
mod node;
mod owner_web;
mod page_audit;
mod pictures;
mod pictures_mirrors;
mod roundtrip;
mod schema_doc;
mod service;
mod sync_cli;
mod sync_hostile;
mod sync_negentropy;
mod sync_protocol;
mod sync_quic;
mod tamper;
mod vectors;
mod zip215;
