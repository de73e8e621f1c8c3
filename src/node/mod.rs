//! A running node: the store, the sync listener, the mesh and the web
//! gateway, wired together until it is told to stop.
//!
//! - [`mod@run`]: starts everything on given settings, shuts down in order.
//! - [`config`]: the node's settings, with defaults, and `config.toml`.
//! - [`admin`]: the local admin socket through which commands reach it.
//! - [`status`]: what the node knows, as JSON and as text.
//! - [`doctor`]: the checks of `capsule doctor`, one line each.
//! - [`federation`]: the fediverse account, when the node has one.
//! - [`log_lines`]: a log as `capsule log` prints it.
//! - [`process`]: process-wide limits a long-running node needs.

pub mod admin;
pub mod config;
pub mod doctor;
pub mod federation;
pub mod log_lines;
pub mod process;
pub mod run;
pub mod status;

pub use config::NodeConfig;
pub use process::raise_open_file_limit;
pub use run::{Listeners, run, shutdown_signal};
