//! `capsule doctor`: one line per thing that can go wrong on a real server,
//! each ok, warning or failing, and every line that is not ok says what to
//! do. It runs in the node (through the admin socket) while the node runs,
//! else on the data directory.
//!
//! Checks: the key backup, the store's integrity, free disk, the domain's
//! DNS records against this machine's addresses, the certificate, and who
//! holds the owner's log; in a running node also, asked of up to three live
//! peers ([`crate::mesh::check`]), whether they reach the sync port and the
//! HTTPS port from outside, and how far the clock is from theirs.
//!
//! - `local`: what the node sees of itself (files, disk, DNS, certificate).
//! - `peers`: what its live peers see of it from outside.

mod local;
mod peers;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::gateway::https::Renewals;
use crate::identity::AuthorKey;
use crate::store::Store;

pub use peers::{
    Answers, CLOCK_FAILING_US, CLOCK_WARNING_US, PEERS_ASKED, Reach, ask_peers, reach_checks,
};

/// The file `capsule export --identity` and `capsule restore` leave in the
/// data directory: the key has a copy elsewhere. It holds the time.
pub const BACKUP_MARK: &str = "identity.backed-up";

/// Free disk below either of these fails: the store may not commit.
pub const DISK_FAILING: (u64, f64) = (256 << 20, 0.02);
/// Free disk below either of these is a warning.
pub const DISK_WARNING: (u64, f64) = (1 << 30, 0.10);

/// A certificate with fewer days left fails (the CA's renewal has had weeks).
pub const CERT_FAILING_DAYS: i64 = 7;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing to do.
    Ok,
    /// Works, but not for long or not for everyone.
    Warning,
    /// Broken: the line says what to do.
    Failing,
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked: `backup`, `store`, `disk`, `dns`, `certificate`,
    /// `holders`, and in a running node `sync port`, `https port`, `clock`.
    pub check: &'static str,
    /// How it came out.
    pub state: State,
    /// What was found, and for a warning or failure what to do.
    pub said: String,
}

pub(super) fn check(check: &'static str, state: State, said: impl Into<String>) -> Check {
    Check {
        check,
        state,
        said: said.into(),
    }
}

/// What the checks look at besides the store.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The data directory.
    pub root: PathBuf,
    /// The owner.
    pub owner: AuthorKey,
    /// The domain, with its certificate cache and, in a running node, how
    /// certificate management went.
    pub domain: Option<(String, PathBuf, Option<Arc<Renewals>>)>,
    /// The integrity check's verdict: `Ok(true)` sound, `Ok(false)`
    /// repaired to its last commit, `Err` damaged (why).
    pub integrity: Result<bool, String>,
    /// In a running node: its live peers and what they are asked to reach.
    pub reach: Option<Reach>,
}

/// Runs every check.
pub fn run(store: Option<&Store>, facts: &Facts) -> Vec<Check> {
    let mut out = vec![
        local::backup(&facts.root),
        local::integrity(&facts.integrity),
        local::disk(&facts.root),
    ];
    if let Some((domain, cache, renewals)) = &facts.domain {
        out.push(local::dns(domain));
        out.push(local::certificate(cache, renewals.as_deref()));
    }
    if let Some(store) = store {
        out.push(local::holders(store, &facts.owner));
    }
    out
}

/// In a running node: asks its live peers, then runs every check on the
/// blocking pool; the report as [`to_json`] gives it.
pub async fn report(store: Arc<Store>, facts: Arc<Facts>) -> Result<Value, tokio::task::JoinError> {
    let answers = match &facts.reach {
        Some(reach) => ask_peers(reach).await,
        None => Vec::new(),
    };
    tokio::task::spawn_blocking(move || {
        let mut checks = run(Some(&store), &facts);
        if let Some(reach) = &facts.reach {
            checks.extend(reach_checks(reach, &answers));
        }
        to_json(&checks)
    })
    .await
}

/// The report as JSON: `{"checks": [{"check", "state", "said"}…], "failing": N}`.
pub fn to_json(checks: &[Check]) -> Value {
    json!({
        "checks": checks,
        "failing": checks.iter().filter(|c| c.state == State::Failing).count(),
        "warnings": checks.iter().filter(|c| c.state == State::Warning).count(),
    })
}

/// The report as text, one line a check.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    for c in report["checks"].as_array().into_iter().flatten() {
        let state = c["state"].as_str().unwrap_or("?");
        out.push_str(&format!(
            "{state:<8} {:<12} {}\n",
            c["check"].as_str().unwrap_or("?"),
            c["said"].as_str().unwrap_or("")
        ));
    }
    out
}
