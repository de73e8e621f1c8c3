//! The admin socket: how commands reach a running node, whose store they
//! cannot open (one process holds it). A Unix socket in the data dir, mode
//! 0600 — only the owner's account can talk to it. One JSON request line,
//! one JSON answer line.
//!
//! Requests ([`Request`], in serde's JSON form):
//! `{"post": {"text": "...", "reply_to": "ID or null", "request": "32 hex digits (optional)", "pictures": [...] (optional)}}`,
//! `{"delete": SEQ}`,
//! `{"profile": {"name": "...", "bio": "...", "avatar": {...} (optional)}}`,
//!
//! Pictures travel by reference: the command prepares them
//! ([`crate::picture`]) and keeps them in the data dir's blob folder, and
//! the request names them (`pictures` as the record's `Picture`s, `avatar`
//! as a `BlobRef`); the node reads them back and checks their hashes.
//! `{"follow": {"author": "KEY", "address": "HOST:PORT or null", "web": "https://... or null"}}`,
//! `{"unfollow": "KEY"}`, `{"peer": "KEY@HOST:PORT"}`, `"status"`,
//! `{"mirror": {"author": "KEY", "add": true}}`,
//! `{"log": {"author": "KEY", "json": false}}`, `"doctor"`.
//! Answers ([`Answer`]): `{"published": {"seq": N, "id": "..."}}`,
//! `{"done": "..."}`, `{"status": {...}}`, `{"doctor": {...}}`, `{"changed": true}`, `"stream"`
//! (the log's lines follow until the socket closes), or `{"error": "..."}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::log::entry::EntryId;
use crate::log::record::{BlobRef, Picture};
use crate::store::Store;
use crate::store::compose::{self, ComposeError};

/// The socket's name in the data dir.
pub const SOCKET_FILE: &str = "admin.sock";

/// The pause after a failed accept (no file descriptor left): long enough
/// not to spin, short enough that a command waits no longer than this once
/// descriptors are free again.
pub const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest request line: a post's text is at most 64 KiB.
pub const MAX_REQUEST: usize = 256 * 1024;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A post or reply.
    Post {
        /// The text.
        text: String,
        /// The id of the entry it replies to (64 hex digits).
        reply_to: Option<String>,
        /// 32 hex digits the command chose: a post sent again with the same
        /// id (its answer was lost) is answered with the entry it published
        /// the first time, not published twice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        /// Pictures the command prepared and kept in the blob folder.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pictures: Vec<Picture>,
    },
    /// A tombstone for the owner's entry `seq`.
    Delete(u64),
    /// Follow an author, optionally with where their node listens.
    Follow {
        /// The author key.
        author: String,
        /// `HOST:PORT` of their node's sync listener.
        address: Option<String>,
        /// `https://HOST[:PORT]` of their node's gateway.
        #[serde(default)]
        web: Option<String>,
    },
    /// Stop following an author.
    Unfollow(String),
    /// Follow an account on another server, `@user@host`.
    FediverseFollow(String),
    /// Stop following an account on another server.
    FediverseUnfollow(String),
    /// Learn a peer's address (`KEY@HOST:PORT`).
    Peer(String),
    /// What the node knows (see [`crate::node::status`]).
    Status,
    /// Mirror (or stop mirroring) an author.
    Mirror {
        /// The author key.
        author: String,
        /// Mirror (true) or stop (false).
        add: bool,
    },
    /// Block, mute, unblock or unmute an author.
    Block {
        /// The author key.
        author: String,
        /// `block`, `mute`, `unblock` or `unmute`.
        change: String,
    },
    /// An author's log as `capsule log` prints it, streamed after a
    /// [`Answer::Stream`] line until the connection closes.
    Log {
        /// The author key.
        author: String,
        /// JSON lines instead of text.
        json: bool,
    },
    /// The owner's profile.
    Profile {
        /// Display name.
        name: String,
        /// Biography.
        bio: String,
        /// A new profile picture the command prepared and kept in the blob
        /// folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<BlobRef>,
    },
    /// The checks of `capsule doctor` (see [`crate::node::doctor`]).
    Doctor,
}

/// An answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The new entry.
    Published {
        /// Its seq.
        seq: u64,
        /// Its id (64 hex digits).
        id: String,
    },
    /// Done; nothing was published.
    Done(String),
    /// The node's status.
    Status(serde_json::Value),
    /// The answer follows as raw lines until the connection closes.
    Stream,
    /// Whether the mirror set changed.
    Changed(bool),
    /// The report of `capsule doctor`.
    Doctor(serde_json::Value),
    /// What went wrong.
    Error(String),
}

/// A post request id (32 hex digits), or the answer that refuses it.
fn request_id(text: &str) -> Result<[u8; 16], Answer> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text, &mut id)
        .map_err(|_| Answer::Error(format!("bad request id {text:?}: want 32 hex digits")))?;
    Ok(id)
}

/// An author key from a request, or the answer that refuses it.
fn author_key(text: &str) -> Result<crate::identity::AuthorKey, Answer> {
    text.parse()
        .map_err(|e| Answer::Error(format!("bad author key: {e}")))
}

/// What a fediverse request hears from a node that has no account.
pub const NO_FEDIVERSE: &str =
    "this node has no fediverse account: start it with --domain (see `capsule up --help`)";

/// Serves one request (on a blocking thread: it writes to the store).
pub fn handle(store: &Store, identity: &Arc<Identity>, line: &str) -> Answer {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Answer::Error(format!("bad request: {e}")),
    };
    let result = match request {
        Request::Post {
            text,
            reply_to,
            request,
            pictures,
        } => {
            let reply_to = match reply_to.map(|r| r.parse::<EntryId>()).transpose() {
                Ok(r) => r,
                Err(e) => return Answer::Error(e.to_string()),
            };
            let request = match request.as_deref().map(request_id).transpose() {
                Ok(r) => r,
                Err(refused) => return refused,
            };
            if let Some(id) = &request {
                match store.published_by(id) {
                    Ok(Some(seq)) => {
                        return Answer::Done(format!(
                            "already published as entry {seq}: this post was sent before and its answer lost"
                        ));
                    }
                    Ok(None) => {}
                    Err(e) => return Answer::Error(e.to_string()),
                }
            }
            let attachments = pictures
                .iter()
                .map(|p| compose::held_picture(store, p))
                .collect::<Result<Vec<_>, _>>();
            attachments.and_then(|a| compose::post(store, identity, text, reply_to, a, request))
        }
        Request::Delete(seq) => compose::delete(store, identity, seq),
        Request::Profile { name, bio, avatar } => avatar
            .map(|a| compose::held_avatar(store, &a))
            .transpose()
            .and_then(|avatar| compose::profile(store, identity, name, bio, avatar)),
        Request::Follow {
            author,
            address,
            web,
        } => {
            let author = match author_key(&author) {
                Ok(a) => a,
                Err(refused) => return refused,
            };
            match compose::follow(store, identity, author, address, web) {
                Ok(Some(entry)) => Ok(entry),
                Ok(None) => return Answer::Done(format!("you already follow {author}")),
                Err(e) => Err(e),
            }
        }
        Request::Unfollow(author) => match author_key(&author) {
            Ok(author) => compose::unfollow(store, identity, author),
            Err(refused) => return refused,
        },
        Request::Log { .. } => {
            return Answer::Error("a log is streamed, not answered in one line".into());
        }
        Request::Mirror { author, add } => {
            let author = match author_key(&author) {
                Ok(a) => a,
                Err(refused) => return refused,
            };
            let changed = if add {
                store.mirror(author)
            } else {
                store.unmirror(author)
            };
            return match changed {
                Ok(c) => Answer::Changed(c),
                Err(e) => Answer::Error(e.to_string()),
            };
        }
        Request::Block { author, change } => {
            let author = match author_key(&author) {
                Ok(a) => a,
                Err(refused) => return refused,
            };
            return match crate::store::compose::block(store, identity, author, &change) {
                Ok(c) => Answer::Changed(c),
                Err(e) => Answer::Error(e.to_string()),
            };
        }
        Request::Status => {
            return match crate::node::status::status(store, identity.author()) {
                Ok(v) => Answer::Status(v),
                Err(e) => Answer::Error(e.to_string()),
            };
        }
        Request::Doctor | Request::FediverseFollow(_) | Request::FediverseUnfollow(_) => {
            return Answer::Error("this request runs in the node, through its socket".into());
        }
        Request::Peer(peer) => {
            let peer: crate::mesh::address::PeerAddr = match peer.parse() {
                Ok(p) => p,
                Err(e) => return Answer::Error(e.to_string()),
            };
            let update = crate::store::AddressUpdate::Learn {
                host_port: peer.host_port.clone(),
                web: None,
                source: crate::store::tables::AddressSource::Bootstrap,
            };
            return match store.update_address(peer.key, update) {
                Ok(()) => Answer::Done(format!("peer {peer} noted")),
                Err(e) => Answer::Error(e.to_string()),
            };
        }
    };
    match result {
        Ok(entry) => Answer::Published {
            seq: entry.seq(),
            id: entry.id().to_string(),
        },
        Err(ComposeError::Refused(m)) => Answer::Error(m),
        Err(e) => Answer::Error(e.to_string()),
    }
}

/// Sends `request` to the node whose socket is at `path`. None when no node
/// listens there (the caller then opens the store itself).
pub fn call(path: &Path, request: &Request) -> Option<std::io::Result<Answer>> {
    let stream = UnixStream::connect(path).ok()?;
    Some(ask(&stream, request).map(|(answer, _)| answer))
}

/// Writes `request` as one line and reads the answer's first line; the
/// reader goes on with whatever follows it.
fn ask<'s>(
    mut stream: &'s UnixStream,
    request: &Request,
) -> std::io::Result<(Answer, BufReader<&'s UnixStream>)> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    let answer = serde_json::from_str(&answer).map_err(std::io::Error::other)?;
    Ok((answer, reader))
}

/// Like [`call`] for a streamed answer ([`Request::Log`]): copies what the
/// node writes to `out`. None when no node listens there.
pub fn call_streaming(
    path: &Path,
    request: &Request,
    out: &mut impl Write,
) -> Option<std::io::Result<()>> {
    let stream = UnixStream::connect(path).ok()?;
    Some((|| {
        let (answer, mut reader) = ask(&stream, request)?;
        match answer {
            Answer::Stream => {
                std::io::copy(&mut reader, out)?;
                out.flush()
            }
            Answer::Error(e) => Err(std::io::Error::other(e)),
            other => Err(std::io::Error::other(format!(
                "unexpected answer {other:?}"
            ))),
        }
    })())
}

/// Chunks a streamed answer is written in.
const STREAM_CHUNK: usize = 64 * 1024;

/// A `Write` that hands full chunks to the socket writer.
struct Chunks {
    buf: Vec<u8>,
    send: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= STREAM_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(STREAM_CHUNK));
        self.send
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// Streams `author`'s log to `write` (the socket), produced on a blocking
/// thread, at most a few chunks ahead of the reader.
async fn stream_log(
    store: Arc<Store>,
    author: &str,
    json: bool,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let author = match author_key(author) {
        Ok(a) => a,
        Err(refused) => {
            let mut line = serde_json::to_string(&refused)?;
            line.push('\n');
            return write.write_all(line.as_bytes()).await;
        }
    };
    let mut line = serde_json::to_string(&Answer::Stream)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let (send, mut chunks) = tokio::sync::mpsc::channel(4);
    let producer = tokio::task::spawn_blocking(move || {
        let mut out = Chunks {
            buf: Vec::with_capacity(STREAM_CHUNK),
            send,
        };
        super::log_lines::write_log(&store, &author, json, &mut out)
    });
    while let Some(chunk) = chunks.recv().await {
        if let Err(e) = write.write_all(&chunk).await {
            drop(chunks);
            let _ = producer.await;
            return Err(e);
        }
    }
    producer.await.map_err(std::io::Error::other)?
}

/// Binds the socket at `path`, mode 0600, removing a stale one first (the
/// caller holds the store, so no other node runs here). Bound before the
/// node says it is up, so a command run then finds it.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests on `listener` (from [`bind`]) until the task is
/// dropped.
pub async fn serve(
    listener: tokio::net::UnixListener,
    store: Arc<Store>,
    identity: Arc<Identity>,
    facts: Arc<super::doctor::Facts>,
    federation: Option<Arc<crate::fediverse::Federation>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: the socket must
                // outlive it, so wait a moment and accept again.
                tracing::warn!(error = %e, "the admin socket cannot accept; retrying");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (store, identity, facts, federation) = (
            Arc::clone(&store),
            Arc::clone(&identity),
            Arc::clone(&facts),
            federation.clone(),
        );
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let answer = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Log { author, json }) => {
                    let _ = stream_log(store, &author, json, &mut write).await;
                    return;
                }
                Ok(Request::Doctor) => match super::doctor::report(store, facts).await {
                    Ok(report) => Answer::Doctor(report),
                    Err(e) => Answer::Error(e.to_string()),
                },
                Ok(Request::FediverseFollow(handle)) => match &federation {
                    None => Answer::Error(NO_FEDIVERSE.into()),
                    Some(fed) => match crate::fediverse::follow::follow(fed, &handle).await {
                        Ok(actor) => Answer::Done(format!(
                            "asked to follow {handle} ({actor}); their posts show on your home once they accept"
                        )),
                        Err(e) => Answer::Error(e.to_string()),
                    },
                },
                Ok(Request::FediverseUnfollow(handle)) => match &federation {
                    None => Answer::Error(NO_FEDIVERSE.into()),
                    Some(fed) => match crate::fediverse::follow::unfollow(fed, &handle).await {
                        Ok(_) => Answer::Done(format!("no longer following {handle}")),
                        Err(e) => Answer::Error(e.to_string()),
                    },
                },
                _ => tokio::task::spawn_blocking(move || handle(&store, &identity, &line))
                    .await
                    .unwrap_or_else(|e| Answer::Error(e.to_string())),
            };
            let mut out = serde_json::to_string(&answer).unwrap_or_default();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}
