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

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::gateway::https::{Renewals, cached_certificate};
use crate::identity::AuthorKey;
use crate::mesh::check::{self, CheckAnswer, CheckRequest, Heard, Outcome};
use crate::mesh::peers::LivePeers;
use crate::store::Store;

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

fn check(check: &'static str, state: State, said: impl Into<String>) -> Check {
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

/// What a running node asks its live peers to try (see
/// [`crate::mesh::check`]).
#[derive(Debug, Clone)]
pub struct Reach {
    /// The live connections.
    pub peers: Arc<LivePeers>,
    /// The advertised sync address, `HOST:PORT`.
    pub sync: String,
    /// The HTTPS origin, with a domain.
    pub web: Option<String>,
    /// The plain HTTP origin that redirects there, with a domain.
    pub http: Option<String>,
}

/// Peers asked at most: enough to tell a firewall from one broken peer.
pub const PEERS_ASKED: usize = 3;

/// A clock this far from the peers' (the median) is a warning ...
pub const CLOCK_WARNING_US: i64 = 30 * 1_000_000;
/// ... and this far, failing: signed timestamps and HTTP signatures are
/// judged by other nodes' clocks.
pub const CLOCK_FAILING_US: i64 = 5 * 60 * 1_000_000;

/// What each asked peer said (or why it said nothing).
pub type Answers = Vec<Result<Heard, (AuthorKey, String)>>;

/// Asks up to [`PEERS_ASKED`] live peers to dial back, at once.
pub async fn ask_peers(reach: &Reach) -> Answers {
    let request = CheckRequest {
        sync: Some(reach.sync.clone()),
        web: reach.web.clone(),
        http: reach.http.clone(),
    };
    let mut asked = tokio::task::JoinSet::new();
    for (peer, connection) in reach.peers.list().into_iter().take(PEERS_ASKED) {
        let request = request.clone();
        asked.spawn(async move {
            check::ask(&connection, peer, &request)
                .await
                .map_err(|e| (peer, e.to_string()))
        });
    }
    let mut out = Vec::new();
    while let Some(done) = asked.join_next().await {
        if let Ok(answer) = done {
            out.push(answer);
        }
    }
    out
}

fn short(key: &AuthorKey) -> String {
    key.to_string()[..8].to_string()
}

/// One address's line from what the peers said.
fn reached(
    name: &'static str,
    what: &str,
    fix: &str,
    answers: &Answers,
    outcome: impl Fn(&CheckAnswer) -> &Outcome,
) -> Check {
    if answers.is_empty() {
        return check(
            name,
            State::Warning,
            format!(
                "no live peer to ask whether {what} is reachable from outside: follow someone (or start with --peer), then run the doctor again"
            ),
        );
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let mut refused = Vec::new();
    for a in answers {
        match a {
            Ok(h) => match outcome(&h.answer) {
                Outcome::Reached => ok.push(short(&h.peer)),
                Outcome::Failed(why) => failed.push(format!("{}: {why}", short(&h.peer))),
                Outcome::Refused(why) => refused.push(format!("{}: {why}", short(&h.peer))),
                Outcome::NotAsked => {}
            },
            Err((peer, why)) => refused.push(format!("{}: {why}", short(peer))),
        }
    }
    if !ok.is_empty() {
        check(
            name,
            State::Ok,
            format!(
                "{what} reached from outside by {} of {} peers ({})",
                ok.len(),
                answers.len(),
                ok.join(", ")
            ),
        )
    } else if !failed.is_empty() {
        check(
            name,
            State::Failing,
            format!("no peer could reach {what} ({}): {fix}", failed.join("; ")),
        )
    } else {
        check(
            name,
            State::Warning,
            format!("no peer would try {what} ({})", refused.join("; ")),
        )
    }
}

/// The lines that need the peers: the sync port, the HTTPS port and the
/// clock.
pub fn reach_checks(reach: &Reach, answers: &Answers) -> Vec<Check> {
    let port = reach.sync.rsplit(':').next().unwrap_or("4433");
    let mut out = vec![reached(
        "sync port",
        &format!("your sync address {}", reach.sync),
        &format!("open UDP port {port} in the machine's and the provider's firewall"),
        answers,
        |a| &a.sync,
    )];
    if let Some(web) = &reach.web {
        out.push(reached(
            "https port",
            &format!("your site {web}"),
            "open TCP port 443 in the machine's and the provider's firewall",
            answers,
            |a| &a.web,
        ));
    }
    if let Some(http) = &reach.http {
        out.push(reached(
            "http port",
            &format!("{http} (it sends browsers and the CA to HTTPS)"),
            "open TCP port 80 in the machine's and the provider's firewall",
            answers,
            |a| &a.http,
        ));
    }
    let mut offsets: Vec<i64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|h| h.offset_us)
        .collect();
    offsets.sort_unstable();
    out.push(match offsets.get(offsets.len() / 2) {
        None => check(
            "clock",
            State::Warning,
            "no live peer to compare the clock with",
        ),
        Some(&median) => {
            let said = format!(
                "your clock is {:.1} s {} the median of {} peers",
                median.unsigned_abs() as f64 / 1e6,
                if median > 0 { "behind" } else { "ahead of" },
                offsets.len()
            );
            let fix = "set it right (`timedatectl set-ntp true`), since every entry you sign carries its time";
            if median.abs() > CLOCK_FAILING_US {
                check("clock", State::Failing, format!("{said}: {fix}"))
            } else if median.abs() > CLOCK_WARNING_US {
                check("clock", State::Warning, format!("{said}: {fix}"))
            } else {
                check("clock", State::Ok, said)
            }
        }
    });
    out
}

/// Runs every check.
pub fn run(store: Option<&Store>, facts: &Facts) -> Vec<Check> {
    let mut out = vec![
        backup(&facts.root),
        integrity(&facts.integrity),
        disk(&facts.root),
    ];
    if let Some((domain, cache, renewals)) = &facts.domain {
        out.push(dns(domain));
        out.push(certificate(cache, renewals.as_deref()));
    }
    if let Some(store) = store {
        out.push(holders(store, &facts.owner));
    }
    out
}

fn backup(root: &Path) -> Check {
    match std::fs::read_to_string(root.join(BACKUP_MARK)) {
        Ok(when) => check(
            "backup",
            State::Ok,
            format!("your key was backed up ({})", when.trim()),
        ),
        Err(_) => check(
            "backup",
            State::Warning,
            "your key has never been backed up: `capsule export --identity -o key.bak`, and keep the file offline (without it your log cannot grow if this machine is lost)",
        ),
    }
}

fn integrity(verdict: &Result<bool, String>) -> Check {
    match verdict {
        Ok(true) => check("store", State::Ok, "every page of the store checks out"),
        Ok(false) => check(
            "store",
            State::Warning,
            "the store was damaged and repaired to its last whole commit; entries mirrored just before may be fetched again",
        ),
        Err(why) => check("store", State::Failing, why.clone()),
    }
}

/// Free and total bytes of the file system holding `path`.
fn space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = s.f_frsize;
    Ok((s.f_bavail * unit, s.f_blocks * unit))
}

fn disk(root: &Path) -> Check {
    let (free, total) = match space(root) {
        Ok(s) => s,
        Err(e) => {
            return check(
                "disk",
                State::Failing,
                format!("cannot read free space: {e}"),
            );
        }
    };
    let share = free as f64 / total.max(1) as f64;
    let said = format!(
        "{:.1} GB free of {:.1} GB ({:.0} %) where {} is",
        free as f64 / 1e9,
        total as f64 / 1e9,
        share * 100.0,
        root.display()
    );
    let low = |(bytes, part): (u64, f64)| free < bytes || share < part;
    if low(DISK_FAILING) {
        check(
            "disk",
            State::Failing,
            format!(
                "{said}: the store may fail to write; free some space or move the data directory to a larger disk"
            ),
        )
    } else if low(DISK_WARNING) {
        check(
            "disk",
            State::Warning,
            format!("{said}: running low; mirrored logs grow with what you follow"),
        )
    } else {
        check("disk", State::Ok, said)
    }
}

/// This machine's own addresses.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list that freeifaddrs releases; each
    // sockaddr is read as the family it says it is.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut at = list;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn dns(domain: &str) -> Check {
    use std::net::ToSocketAddrs;
    let mine = local_addresses();
    let public: Vec<IpAddr> = mine
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect();
    let resolved: Vec<IpAddr> = match (domain, 443).to_socket_addrs() {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(e) => {
            return check(
                "dns",
                State::Failing,
                format!(
                    "{domain} does not resolve ({e}): add A and AAAA records pointing at this machine ({})",
                    list(&public)
                ),
            );
        }
    };
    let here: Vec<IpAddr> = resolved
        .iter()
        .copied()
        .filter(|ip| mine.contains(ip))
        .collect();
    if here.len() == resolved.len() {
        check(
            "dns",
            State::Ok,
            format!("{domain} points at this machine ({})", list(&resolved)),
        )
    } else if !here.is_empty() {
        check(
            "dns",
            State::Warning,
            format!(
                "{domain} points at {}, of which {} are not this machine's ({}): visitors sent there miss this node; remove those records",
                list(&resolved),
                resolved.len() - here.len(),
                list(&public)
            ),
        )
    } else {
        check(
            "dns",
            State::Warning,
            format!(
                "{domain} points at {}, none of them this machine's addresses ({}): fine behind a router or proxy that forwards TCP 80 and 443 and UDP 4433 here; otherwise point the A and AAAA records at this machine",
                list(&resolved),
                list(&public)
            ),
        )
    }
}

fn certificate(cache: &Path, renewals: Option<&Renewals>) -> Check {
    let state = renewals.map(Renewals::state).unwrap_or_default();
    let last_error = state
        .failed
        .as_ref()
        .filter(|(at, _)| *at >= state.deployed_us);
    let attempt = match last_error {
        Some((at, why)) => format!(
            "; the last attempt, at {}, failed: {why}",
            crate::log::present::rfc3339(*at)
        ),
        None => String::new(),
    };
    let Some(pem) = cached_certificate(cache) else {
        return check(
            "certificate",
            State::Failing,
            format!(
                "no certificate yet{attempt}: the CA must reach this machine on port 443 for the domain (check DNS and the firewall), then the node obtains one by itself"
            ),
        );
    };
    let parsed = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .and_then(|p| {
            let cert = p.parse_x509().ok()?;
            let v = cert.validity();
            Some((
                cert.issuer().to_string(),
                v.not_before.timestamp(),
                v.not_after.timestamp(),
            ))
        });
    let Some((issuer, from, until)) = parsed else {
        return check(
            "certificate",
            State::Failing,
            format!(
                "the cached certificate in {} cannot be read: move it aside and restart the node to obtain a new one",
                cache.display()
            ),
        );
    };
    let now = (crate::clock::now_us() / 1_000_000) as i64;
    let days = (until - now).div_euclid(86_400);
    // rustls-acme renews in the last third of the validity.
    let renew_at = until - (until - from) / 3;
    let said = format!("issued by {issuer}, {days} days left");
    if until <= now {
        check(
            "certificate",
            State::Failing,
            format!(
                "{said}: expired{attempt}; browsers refuse the site until the node renews it (is port 443 reachable for the CA?)"
            ),
        )
    } else if days < CERT_FAILING_DAYS {
        check(
            "certificate",
            State::Failing,
            format!(
                "{said}: renewal has been failing{attempt}; check that port 443 is reachable for the CA"
            ),
        )
    } else if now >= renew_at {
        check(
            "certificate",
            State::Warning,
            format!("{said}: within its renewal window, not renewed yet{attempt}"),
        )
    } else {
        check(
            "certificate",
            State::Ok,
            format!("{said}; renewed in {} days", (renew_at - now) / 86_400),
        )
    }
}

fn holders(store: &Store, owner: &AuthorKey) -> Check {
    let held = match store.held_by(owner) {
        Ok(h) => h,
        Err(e) => {
            return check(
                "holders",
                State::Failing,
                format!("cannot read the store: {e}"),
            );
        }
    };
    let said = held.describe(true);
    let newest = held.peers.iter().map(|(_, r)| r.seen_us).max();
    let seen = newest.map_or(String::new(), |us| {
        format!(" (last seen {})", crate::log::present::rfc3339(us))
    });
    if held.peers.is_empty() {
        check(
            "holders",
            State::Warning,
            format!("{said}; ask a friend to follow you"),
        )
    } else if held.up_to_date == 0 {
        check(
            "holders",
            State::Warning,
            format!("{said}{seen}: your newest posts are here only until a follower syncs"),
        )
    } else {
        check("holders", State::Ok, format!("{said}{seen}"))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_addresses_and_loopback_is_among_them() {
        let mine = local_addresses();
        assert!(mine.contains(&IpAddr::from([127, 0, 0, 1])), "{mine:?}");
    }

    #[test]
    fn a_missing_backup_mark_is_a_warning_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let c = backup(dir.path());
        assert_eq!(c.state, State::Warning);
        assert!(c.said.contains("capsule export --identity"));
        std::fs::write(dir.path().join(BACKUP_MARK), "2026-12-07T00:00:00Z\n").unwrap();
        assert_eq!(backup(dir.path()).state, State::Ok);
    }
}
