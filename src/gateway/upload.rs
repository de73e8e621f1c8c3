//! The owner's forms that carry pictures: a post with up to four (each
//! with its alt text) and the profile with its picture, sent as
//! `multipart/form-data`. The session is checked from the headers before
//! a byte of the body is read, so a stranger's upload costs nothing but
//! its headers; each file is read up to the 16 MiB limit and refused past
//! it; one upload is prepared at a time (a picture may take 200 MB while
//! it is decoded).

use std::sync::OnceLock;

use axum::extract::{FromRequest, Multipart, Request, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::State;
use super::auth::same;
use super::forms::{forbidden, publish, refusal};
use crate::log::entry::EntryId;
use crate::picture::{self, MAX_FILE};
use crate::store::compose::{self, Attachment, MAX_PICTURES};

/// The largest upload: four pictures at the file limit, and the text.
pub const MAX_UPLOAD: usize = MAX_PICTURES * MAX_FILE + super::MAX_FORM;

/// Uploads prepared at once.
fn one_at_a_time() -> &'static tokio::sync::Semaphore {
    static UPLOADS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    UPLOADS.get_or_init(|| tokio::sync::Semaphore::new(1))
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

/// The fields of a form: text fields by name, files by name.
#[derive(Default)]
struct Fields {
    text: std::collections::HashMap<String, String>,
    files: std::collections::HashMap<String, Vec<u8>>,
}

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.text.get(name).map_or("", String::as_str)
    }
}

/// Reads a multipart body: text fields up to the form limit, files up to
/// [`MAX_FILE`] each (an empty file input is no file).
async fn read_fields(mut form: Multipart) -> Result<Fields, String> {
    let mut fields = Fields::default();
    while let Some(mut field) = form.next_field().await.map_err(|e| e.body_text())? {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let limit = if is_file { MAX_FILE } else { super::MAX_FORM };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| e.body_text())? {
            if bytes.len() + chunk.len() > limit {
                return Err(if is_file {
                    format!(
                        "{name}: {}",
                        picture::PictureError::TooLarge(bytes.len() + chunk.len())
                    )
                } else {
                    format!("the field {name} is too long")
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if is_file {
            if !bytes.is_empty() {
                fields.files.insert(name, bytes);
            }
        } else {
            fields
                .text
                .insert(name, String::from_utf8_lossy(&bytes).replace("\r\n", "\n"));
        }
    }
    Ok(fields)
}

/// Checks the session before the body is read; then the fields, and the
/// form's token.
async fn owner_fields(state: &State, request: Request) -> Result<Fields, Response> {
    let Some(viewer) = state.owner_auth.viewer(request.headers()) else {
        return Err(Redirect::to("/login").into_response());
    };
    let form = Multipart::from_request(request, state)
        .await
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, "Not published", &e.body_text()))?;
    let fields = read_fields(form)
        .await
        .map_err(|m| refusal(StatusCode::BAD_REQUEST, "Not published", &m))?;
    if !same(&viewer.csrf, fields.get("csrf")) {
        return Err(forbidden());
    }
    Ok(fields)
}

/// `POST /post`: a post from the compose form, with pictures when sent as
/// multipart; a plain form goes to `forms::post_form`.
pub async fn post(Extract(state): Extract<State>, request: Request) -> Response {
    if !is_multipart(request.headers()) {
        // A plain form is read only for a session, and only up to the form
        // limit: this route's larger limit is for pictures.
        if state.owner_auth.viewer(request.headers()).is_none() {
            return Redirect::to("/login").into_response();
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, super::MAX_FORM).await else {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Not posted",
                "a post without pictures is at most 256 KiB",
            );
        };
        let headers = parts.headers.clone();
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        return match axum::extract::Form::from_request(request, &state).await {
            Ok(form) => super::forms::post_form(state, headers, form).await,
            Err(e) => e.into_response(),
        };
    }
    let fields = match owner_fields(&state, request).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let reply_to = match fields.get("reply_to").trim() {
        "" => None,
        id => match id.parse::<EntryId>() {
            Ok(id) => Some(id),
            Err(e) => return refusal(StatusCode::BAD_REQUEST, "Not posted", &e.to_string()),
        },
    };
    let text = fields.get("text").to_string();
    let mut files = Vec::new();
    for i in 1..=MAX_PICTURES + 1 {
        if let Some(bytes) = fields.files.get(&format!("picture{i}")) {
            files.push((i, bytes.clone(), fields.get(&format!("alt{i}")).to_string()));
        }
    }
    let Ok(_turn) = one_at_a_time().acquire().await else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not posted",
            "the node is stopping",
        );
    };
    publish(&state, move |store, identity| {
        let mut attachments = Vec::new();
        for (i, bytes, alt) in files {
            let prepared = picture::prepare(&bytes)
                .map_err(|e| compose::ComposeError::Refused(format!("picture {i}: {e}")))?;
            attachments.push(Attachment { prepared, alt });
        }
        compose::post(store, identity, text, reply_to, attachments, None)
    })
    .await
}

/// `POST /profile`: the owner's name, bio and picture.
pub async fn profile(Extract(state): Extract<State>, request: Request) -> Response {
    if !is_multipart(request.headers()) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "Not saved",
            "the profile form is sent as multipart/form-data",
        );
    }
    let fields = match owner_fields(&state, request).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let (name, bio) = (
        fields.get("name").to_string(),
        fields.get("bio").to_string(),
    );
    let avatar = fields.files.get("avatar").cloned();
    let Ok(_turn) = one_at_a_time().acquire().await else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not saved",
            "the node is stopping",
        );
    };
    let owner = state.owner;
    let saved = publish(&state, move |store, identity| {
        let avatar = avatar
            .map(|bytes| picture::prepare_avatar(&bytes))
            .transpose()
            .map_err(|e| compose::ComposeError::Refused(format!("the picture: {e}")))?;
        compose::profile(store, identity, name, bio, avatar)
    })
    .await;
    if saved.status().is_redirection() {
        return Redirect::to(&format!("/@{owner}")).into_response();
    }
    saved
}
