//! Who is looking: the owner, logged in with the passphrase set by
//! `capsule passwd`, or a visitor. The forms that log in and write are in
//! [`super::forms`].
//!
//! - Sessions: a random 256-bit token in an HttpOnly, SameSite=Strict cookie
//!   (Secure on HTTPS), held in memory only: a restart logs the owner out.
//! - CSRF: every form carries the session's own random token, compared with
//!   the session's; the login form carries a token bound to a short-lived
//!   cookie (double submit). SameSite=Strict already keeps other sites'
//!   forms from carrying the cookie; the token is the second lock.
//! - Login is rate-limited per client address ([`MAX_FAILURES`] wrong
//!   passphrases per [`FAILURE_WINDOW`]), and at most
//!   [`CONCURRENT_CHECKS`] argon2 checks run at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use rand_core::{OsRng, RngCore};
use tokio::sync::Semaphore;

/// The session cookie.
pub const SESSION_COOKIE: &str = "capsule_session";
/// The login form's cookie (double-submit CSRF token before a session).
pub const LOGIN_COOKIE: &str = "capsule_login";
/// How long a session lasts without logging in again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long a login form stays valid.
pub const LOGIN_FORM_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Sessions held at once; logging in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 32;
/// Wrong passphrases one address may try per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered; beyond it the oldest windows go.
pub const MAX_TRACKED: usize = 4096;
/// argon2 checks running at once (each takes ~19 MiB and a core for tens of
/// milliseconds).
pub const CONCURRENT_CHECKS: usize = 2;

/// The client's address, for the login rate limit (put on every request by
/// [`super::connections`]).
#[derive(Debug, Clone, Copy)]
pub struct Client(pub SocketAddr);

#[derive(Debug, Clone)]
pub(super) struct Session {
    csrf: String,
    expires: Instant,
}

/// Logged-in sessions and login failures.
pub struct Owner {
    pub(super) passphrase: std::path::PathBuf,
    pub(super) secure: bool,
    pub(super) sessions: Mutex<HashMap<String, Session>>,
    pub(super) failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    pub(super) checks: Semaphore,
}

impl Owner {
    /// Checks logins against the passphrase file at `passphrase`; cookies are
    /// marked Secure when `secure` (the node serves HTTPS).
    pub fn new(passphrase: std::path::PathBuf, secure: bool) -> Owner {
        Owner {
            passphrase,
            secure,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    /// Whether the node serves HTTPS (cookies are then Secure).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The logged-in owner behind these request headers, if any.
    pub fn viewer(&self, headers: &HeaderMap) -> Option<Viewer> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let session = sessions.get(token)?;
        if session.expires < Instant::now() {
            sessions.remove(token);
            return None;
        }
        Some(Viewer {
            csrf: session.csrf.clone(),
        })
    }

    pub(super) fn set_cookie(
        &self,
        name: &str,
        value: &str,
        max_age: Duration,
        path: &str,
    ) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            max_age.as_secs()
        ))
        .expect("cookie is ASCII")
    }

    pub(super) fn start_session(&self) -> String {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        let session = token();
        sessions.insert(
            session.clone(),
            Session {
                csrf: token(),
                expires: now + SESSION_LIFETIME,
            },
        );
        session
    }

    /// Seconds until `ip` may try again, if it is over its failures.
    pub(super) fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().expect("failures lock");
        let (since, count) = failures.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    pub(super) fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("failures lock");
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        if failures.len() >= MAX_TRACKED
            && let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| *k)
        {
            failures.remove(&oldest);
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// A logged-in owner, as the pages need it: the token their forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session's CSRF token.
    pub csrf: String,
}

pub(super) fn token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares two tokens in time independent of where they differ.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
