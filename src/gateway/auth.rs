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
//! - Login is rate-limited per client address ([`MAX_FAILURES`] attempts
//!   per [`FAILURE_WINDOW`], counted as they arrive, before any check), at
//!   most [`CONCURRENT_CHECKS`] argon2 checks run at once, and at most
//!   [`MAX_WAITING`] more wait for one: beyond that a login is told to come
//!   back (429) without being held.

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
/// Passphrases one address may try per [`FAILURE_WINDOW`]; the right one
/// forgives the address its earlier attempts.
pub const MAX_FAILURES: u32 = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failures are remembered; beyond it the oldest windows go.
pub const MAX_TRACKED: usize = 4096;
/// argon2 checks running at once. Each takes ~19 MiB and a core for tens
/// of milliseconds, and a node has one owner who logs in now and then: one
/// at a time keeps a burst of wrong logins to 19 MiB.
pub const CONCURRENT_CHECKS: usize = 1;
/// Logins that may wait for a check; beyond them a login is answered 429 at
/// once. Waiting costs only the request (at most a small form), and 16
/// waiting behind one check is about a second.
pub const MAX_WAITING: usize = 16;

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
    attempts: Mutex<HashMap<Address, (Instant, u32)>>,
    pub(super) checks: Semaphore,
    queue: Semaphore,
}

impl Owner {
    /// Checks logins against the passphrase file at `passphrase`; cookies are
    /// marked Secure when `secure` (the node serves HTTPS).
    pub fn new(passphrase: std::path::PathBuf, secure: bool) -> Owner {
        Owner {
            passphrase,
            secure,
            sessions: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            checks: Semaphore::new(CONCURRENT_CHECKS),
            queue: Semaphore::new(CONCURRENT_CHECKS + MAX_WAITING),
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

    /// Takes one of `client`'s login attempts, before its passphrase is
    /// checked, or says how many seconds until it may try again. Counting
    /// on arrival is what holds the limit when many attempts come at once.
    pub(super) fn attempt(&self, client: IpAddr) -> Result<(), u64> {
        let key = Address::of(client);
        let mut attempts = self.attempts.lock().expect("attempts lock");
        let now = Instant::now();
        if attempts.len() >= MAX_TRACKED && !attempts.contains_key(&key) {
            attempts.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
            if attempts.len() >= MAX_TRACKED
                && let Some(oldest) = attempts
                    .iter()
                    .min_by_key(|(_, (s, _))| *s)
                    .map(|(k, _)| *k)
            {
                attempts.remove(&oldest);
            }
        }
        let (since, count) = attempts.entry(key).or_insert((now, 0));
        let elapsed = now.duration_since(*since);
        if elapsed >= FAILURE_WINDOW {
            (*since, *count) = (now, 0);
        }
        if *count >= MAX_FAILURES {
            let left = FAILURE_WINDOW.saturating_sub(elapsed);
            return Err(left.as_secs().max(1));
        }
        *count += 1;
        Ok(())
    }

    /// The right passphrase came from `client`: its attempts are forgiven.
    pub(super) fn succeeded(&self, client: IpAddr) {
        let key = Address::of(client);
        self.attempts.lock().expect("attempts lock").remove(&key);
    }

    /// A place in line for an argon2 check, or None when the line is full
    /// (the caller answers 429 at once rather than hold the request).
    pub(super) fn queue(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.queue.try_acquire().ok()
    }
}

/// Whom the login limit counts: an IPv4 address, or an IPv6 /64 (one
/// subscriber's whole prefix, which they can rotate through at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Address {
    V4(u32),
    V6Prefix(u64),
}

impl Address {
    fn of(ip: IpAddr) -> Address {
        match ip {
            IpAddr::V4(v4) => Address::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Address::V4(v4.into()),
                None => Address::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
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
