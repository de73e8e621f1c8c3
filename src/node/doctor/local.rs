//! The checks a node makes of itself: the key backup, the store's
//! integrity, free disk, the domain's DNS records against this machine's
//! addresses, the certificate, and who holds the owner's log.

use std::net::IpAddr;
use std::path::Path;

use super::{BACKUP_MARK, CERT_FAILING_DAYS, Check, DISK_FAILING, DISK_WARNING, State, check};
use crate::gateway::https::{Renewals, cached_certificate};
use crate::identity::AuthorKey;
use crate::store::Store;

pub(super) fn backup(root: &Path) -> Check {
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

pub(super) fn integrity(verdict: &Result<bool, String>) -> Check {
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

pub(super) fn disk(root: &Path) -> Check {
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

pub(super) fn dns(domain: &str) -> Check {
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

pub(super) fn certificate(cache: &Path, renewals: Option<&Renewals>) -> Check {
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

pub(super) fn holders(store: &Store, owner: &AuthorKey) -> Check {
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
