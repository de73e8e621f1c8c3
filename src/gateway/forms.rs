//! The owner's forms: log in and out, post, reply, delete, follow and
//! unfollow. Each form carries its session's CSRF token; a refusal is a
//! page that says why.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use std::time::Duration;

use super::auth::{
    Client, LOGIN_COOKIE, LOGIN_FORM_LIFETIME, SESSION_COOKIE, SESSION_LIFETIME, cookie, same,
    token,
};
use super::passphrase::{self, PassphraseError};
use super::{State, views};
use crate::identity::AuthorKey;
use crate::log::entry::EntryId;
use crate::store::compose::{self, ComposeError};

/// A form refused: the page says why, with the given status.
pub(super) fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    (status, views::message_page(title, message)).into_response()
}

pub(super) fn forbidden() -> Response {
    refusal(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form's security token is missing or stale. Go back, reload the page and try again.",
    )
}

/// Refuses a POST (every form is one) that says it comes from another
/// site, whatever cookie and token it carries: `Sec-Fetch-Site` other than
/// `same-origin` or `none` (typed or bookmarked), or an `Origin` whose
/// host is not this request's `Host`. Browsers send one or both with every
/// form; a client that sends neither (a script of the owner's) is judged
/// by its session and token alone.
pub async fn same_origin(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() == axum::http::Method::POST && !from_this_site(request.headers()) {
        return refusal(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site. Use the forms on this site.",
        );
    }
    next.run(request).await
}

/// Whether a request's own headers place it on this site (see
/// [`same_origin`]).
pub fn from_this_site(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return false;
    }
    match text("origin") {
        None => true,
        Some(origin) => {
            let authority = origin
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'));
            match (authority, text("host")) {
                (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
                // "null" (a sandboxed or privacy-sensitive context), or no Host.
                _ => false,
            }
        }
    }
}

/// Why a form post may not go on: no session (to /login) or a CSRF token
/// that is not the session's. None when it may.
pub(super) fn refused(state: &State, headers: &HeaderMap, csrf: &str) -> Option<Response> {
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

pub(super) fn login_form(state: &State, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = token();
    let mut response = (status, views::login_page(&csrf, error)).into_response();
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
    match cookie(&headers, LOGIN_COOKIE) {
        Some(expected) if same(expected, &form.csrf) => {}
        _ => return forbidden(),
    }
    let owner = Arc::clone(&state.owner_auth);
    if let Err(wait) = owner.attempt(ip) {
        tracing::warn!(%ip, "login refused: too many attempts");
        return come_back(
            wait,
            "Too many attempts",
            &format!("Too many passphrases tried from your address. Try again in {wait} s."),
        );
    }
    let Some(_in_line) = owner.queue() else {
        tracing::warn!(%ip, "login refused: too many logins waiting");
        return come_back(
            1,
            "Busy",
            "Too many logins are being checked right now. Try again in a moment.",
        );
    };
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
            owner.succeeded(ip);
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

/// 429 Too Many Requests, with the seconds to wait in Retry-After.
fn come_back(wait: u64, title: &str, text: &str) -> Response {
    let mut response = refusal(StatusCode::TOO_MANY_REQUESTS, title, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    response
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

/// `POST /post` sent as a plain form (text only): publishes, then shows
/// the new post's page. A form with pictures is read by
/// [`super::upload::post`].
pub(super) async fn post_form(
    state: State,
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
        compose::post(store, identity, text, reply_to, Vec::new(), None)
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
pub(super) async fn publish(
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
    if form.target.trim().starts_with('@') {
        return remote(&state, form.target.trim(), true).await;
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

/// Follows (or unfollows) `@user@host` on the fediverse, then back home.
async fn remote(state: &State, handle: &str, follow: bool) -> Response {
    let title = if follow {
        "Not followed"
    } else {
        "Not unfollowed"
    };
    let Some(remote) = &state.remote_follow else {
        return refusal(
            StatusCode::BAD_REQUEST,
            title,
            "This node has no fediverse account: start it with --domain.",
        );
    };
    match remote(handle.to_string(), follow).await {
        Ok(actor) => {
            tracing::info!(%actor, follow, "owner changed a fediverse follow from the web");
            Redirect::to("/").into_response()
        }
        Err(m) => refusal(StatusCode::BAD_REQUEST, title, &m),
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
    if form.author.trim().starts_with('@') {
        return remote(&state, form.author.trim(), false).await;
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

/// The block and mute buttons' form.
#[derive(Debug, Deserialize)]
pub struct BlockForm {
    #[serde(default)]
    author: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /block`: blocks, mutes, unblocks or unmutes an author, then back
/// to their page.
pub async fn block(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Form(form): Form<BlockForm>,
) -> Response {
    if let Some(refusal) = refused(&state, &headers, &form.csrf) {
        return refusal;
    }
    if form.author.trim().starts_with('@') {
        return remote(&state, form.author.trim(), false).await;
    }
    let author: AuthorKey = match form.author.parse() {
        Ok(a) => a,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "Nothing changed", &e.to_string()),
    };
    let (store, identity) = (Arc::clone(&state.store), Arc::clone(&state.identity));
    let action = form.action;
    let done = tokio::task::spawn_blocking(move || {
        compose::block(&store, &identity, author, &action).map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(_)) => Redirect::to(&format!("/@{author}")).into_response(),
        Ok(Err(m)) => refusal(StatusCode::BAD_REQUEST, "Nothing changed", &m),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Nothing changed",
            &e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_this_sites_forms_pass() {
        let host = ("host", "alice.example");
        assert!(from_this_site(&headers(&[host])), "no word: tokens decide");
        assert!(from_this_site(&headers(&[
            host,
            ("origin", "https://alice.example")
        ])));
        assert!(from_this_site(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(from_this_site(&headers(&[
            host,
            ("sec-fetch-site", "none")
        ])));
        assert!(!from_this_site(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!from_this_site(&headers(&[
            host,
            ("origin", "https://alice.example.evil")
        ])));
        assert!(!from_this_site(&headers(&[host, ("origin", "null")])));
        assert!(!from_this_site(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!from_this_site(&headers(&[
            host,
            ("sec-fetch-site", "same-site")
        ])));
        assert!(
            !from_this_site(&headers(&[("origin", "https://alice.example")])),
            "no Host"
        );
    }
}
