//! The owner writing from a browser: log in with the passphrase set by
//! `capsule passwd`, then post, reply, delete and log out through plain HTML
//! forms.
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Form, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{State, pages};
use crate::gateway::passphrase::{self, PassphraseError};
use crate::identity::AuthorKey;
use crate::log::entry::EntryId;
use crate::store::compose::{self, ComposeError};

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

/// The client's address, for the login rate limit.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Client {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Client(*stream.remote_addr())
    }
}

impl Connected<axum::serve::IncomingStream<'_, super::https::TlsListener>> for Client {
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::https::TlsListener>) -> Self {
        Client(*stream.remote_addr())
    }
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// Logged-in sessions and login failures.
pub struct Owner {
    passphrase: std::path::PathBuf,
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    checks: Semaphore,
}

/// A logged-in owner, as the pages need it: the token their forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session's CSRF token.
    pub csrf: String,
}

fn token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
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
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
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

    fn set_cookie(&self, name: &str, value: &str, max_age: Duration, path: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            max_age.as_secs()
        ))
        .expect("cookie is ASCII")
    }

    fn start_session(&self) -> String {
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
    fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().expect("failures lock");
        let (since, count) = failures.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    fn failed(&self, ip: IpAddr) {
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

/// A form refused: the page says why, with the given status.
fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    (status, pages::message_page(title, message)).into_response()
}

fn forbidden() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form's security token is missing or stale. Go back, reload the page and try again.",
    )
}

/// Why a form post may not go on: no session (to /login) or a CSRF token
/// that is not the session's. None when it may.
fn refused(state: &State, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    let Some(viewer) = state.owner_auth.viewer(headers) else {
        return Some(Redirect::to("/login").into_response());
    };
    (!same(&viewer.csrf, csrf)).then(forbidden)
}

/// `GET /login`.
pub async fn login_page(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    if state.owner_auth.viewer(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(&state, StatusCode::OK, None)
}

fn login_form(state: &State, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = token();
    let mut response = (status, pages::login_page(&csrf, error)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        state
            .owner_auth
            .set_cookie(LOGIN_COOKIE, &csrf, LOGIN_FORM_LIFETIME, "/login"),
    );
    response
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    passphrase: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`.
pub async fn login(
    Extract(state): Extract<State>,
    ConnectInfo(Client(client)): ConnectInfo<Client>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = client.ip();
    if let Some(wait) = state.owner_auth.blocked(ip) {
        tracing::warn!(%ip, "login refused: too many wrong passphrases");
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            &format!("Too many wrong passphrases from your address. Try again in {wait} s."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return response;
    }
    match cookie(&headers, LOGIN_COOKIE) {
        Some(expected) if same(expected, &form.csrf) => {}
        _ => return forbidden(),
    }
    let owner = Arc::clone(&state.owner_auth);
    let Ok(_slot) = owner.checks.acquire().await else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "The node is stopping.",
        );
    };
    let path = owner.passphrase.clone();
    let checked = tokio::task::spawn_blocking(move || passphrase::check(&path, &form.passphrase))
        .await
        .unwrap_or_else(|e| Err(PassphraseError::Io(std::io::Error::other(e.to_string()))));
    match checked {
        Ok(true) => {
            tracing::info!(%ip, "owner logged in");
            let session = owner.start_session();
            let mut response = Redirect::to("/").into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                owner.set_cookie(SESSION_COOKIE, &session, SESSION_LIFETIME, "/"),
            );
            headers.append(
                header::SET_COOKIE,
                owner.set_cookie(LOGIN_COOKIE, "", Duration::ZERO, "/login"),
            );
            response
        }
        Ok(false) => {
            owner.failed(ip);
            state
                .metrics
                .login_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%ip, "wrong passphrase");
            login_form(&state, StatusCode::UNAUTHORIZED, Some("Wrong passphrase."))
        }
        Err(e) => login_form(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&e.to_string()),
        ),
    }
}

/// A form that carries only its token.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`.
pub async fn logout(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state
            .owner_auth
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(token);
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        state
            .owner_auth
            .set_cookie(SESSION_COOKIE, "", Duration::ZERO, "/"),
    );
    response
}

/// The compose and reply form.
#[derive(Debug, Deserialize)]
pub struct PostForm {
    #[serde(default)]
    text: String,
    /// The id of the entry replied to; empty for a new post.
    #[serde(default)]
    reply_to: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /post`: publishes, then shows the new post's page.
pub async fn post(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<PostForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    let reply_to = match form.reply_to.trim() {
        "" => None,
        id => match id.parse::<EntryId>() {
            Ok(id) => Some(id),
            Err(e) => return refusal(StatusCode::BAD_REQUEST, "Not posted", &e.to_string()),
        },
    };
    let text = form.text.replace("\r\n", "\n");
    publish(&state, move |store, identity| {
        compose::post(store, identity, text, reply_to)
    })
    .await
}

/// The delete button's form.
#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    seq: u64,
    #[serde(default)]
    csrf: String,
}

/// `POST /delete`: publishes a tombstone, then shows the timeline.
pub async fn delete(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    let seq = form.seq;
    match publish(&state, move |store, identity| {
        compose::delete(store, identity, seq)
    })
    .await
    {
        r if r.status() == StatusCode::SEE_OTHER => Redirect::to("/").into_response(),
        r => r,
    }
}

/// Runs a publishing step on the blocking pool (it waits for the store's
/// fsync) and answers with a redirect to the new entry, or the refusal.
async fn publish(
    state: &State,
    f: impl FnOnce(
        &crate::store::Store,
        &Arc<crate::identity::Identity>,
    ) -> Result<crate::log::entry::Entry, ComposeError>
    + Send
    + 'static,
) -> Response {
    let (store, identity) = (Arc::clone(&state.store), Arc::clone(&state.identity));
    let result = tokio::task::spawn_blocking(move || f(&store, &identity)).await;
    match result {
        Ok(Ok(entry)) => {
            tracing::info!(seq = entry.seq(), "owner published from the web");
            Redirect::to(&format!("/@{}/{}", entry.author(), entry.seq())).into_response()
        }
        Ok(Err(ComposeError::Refused(m))) => refusal(StatusCode::BAD_REQUEST, "Not published", &m),
        Ok(Err(e)) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not published",
            &e.to_string(),
        ),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not published",
            &e.to_string(),
        ),
    }
}

/// The follow form: a domain, `KEY@HOST:PORT` or a key.
#[derive(Debug, Deserialize)]
pub struct FollowForm {
    #[serde(default)]
    target: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /follow`: looks the target up if it is a domain, publishes the
/// Follow record, and shows the home timeline.
pub async fn follow(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<FollowForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    let (store, identity) = (Arc::clone(&state.store), Arc::clone(&state.identity));
    let done = tokio::task::spawn_blocking(move || -> Result<AuthorKey, String> {
        let (author, address, web) = crate::mesh::well_known::follow_target(&form.target, None)
            .map_err(|e| format!("{e:#}"))?;
        compose::follow(&store, &identity, author, address, web).map_err(|e| e.to_string())?;
        Ok(author)
    })
    .await;
    match done {
        Ok(Ok(author)) => {
            tracing::info!(%author, "owner followed from the web");
            Redirect::to("/").into_response()
        }
        Ok(Err(m)) => refusal(StatusCode::BAD_REQUEST, "Not followed", &m),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not followed",
            &e.to_string(),
        ),
    }
}

/// The unfollow button's form.
#[derive(Debug, Deserialize)]
pub struct UnfollowForm {
    #[serde(default)]
    author: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /unfollow`: publishes the Unfollow record; the mirror stays.
pub async fn unfollow(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<UnfollowForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    let author: AuthorKey = match form.author.parse() {
        Ok(a) => a,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "Not unfollowed", &e.to_string()),
    };
    match publish(&state, move |store, identity| {
        compose::unfollow(store, identity, author)
    })
    .await
    {
        r if r.status() == StatusCode::SEE_OTHER => {
            Redirect::to(&format!("/@{author}")).into_response()
        }
        r => r,
    }
}
