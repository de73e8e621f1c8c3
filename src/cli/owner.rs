//! What the owner does through the running node (or, when none runs,
//! straight on the store): post, delete, profile, follow, mirror, and ask
//! what the node knows (`status`, `peers`, `log`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::{admin_socket, load_identity, via_node_or_store};
use crate::data_dir::DataDir;
use crate::identity::AuthorKey;
use crate::log::entry::EntryId;
use crate::node::admin;

pub(super) fn status(dir: &DataDir, as_json: bool, peers_only: bool) -> Result<ExitCode> {
    let status = via_node_or_store(
        dir,
        &admin::Request::Status,
        |answer| match answer {
            admin::Answer::Status(v) => Ok(v),
            admin::Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the node: {other:?}"),
        },
        |store| {
            let owner = load_identity(dir)?.author();
            Ok(crate::node::status::status(store, owner)?)
        },
    )?;
    match (as_json, peers_only) {
        (true, true) => println!("{}", status["peers"]),
        (true, false) => println!("{status}"),
        (false, _) => print!("{}", crate::node::status::render(&status, peers_only)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn follow(dir: &DataDir, target: &str, ca_root: Option<&Path>) -> Result<ExitCode> {
    if target.starts_with('@') || target.starts_with("acct:") {
        return fediverse(dir, admin::Request::FediverseFollow(target.to_string()));
    }
    let (author, address, web) = crate::mesh::well_known::follow_target(target, ca_root)?;
    if web.is_some() {
        println!("{target} is {author}");
    }
    publish(
        dir,
        admin::Request::Follow {
            author: author.to_string(),
            address,
            web,
        },
    )?;
    println!("following {author}; your node mirrors their log from now on");
    Ok(ExitCode::SUCCESS)
}

/// `@user@host` on another server, followed or unfollowed by the running
/// node (which looks them up and sends the signed request).
pub(super) fn fediverse(dir: &DataDir, request: admin::Request) -> Result<ExitCode> {
    let answer = admin::call(&super::admin_socket(dir), &request).ok_or_else(|| {
        anyhow::anyhow!(
            "following on the fediverse needs the node running (`capsule up --domain ...`)"
        )
    })?;
    match anyhow::Context::context(answer, "the running node did not answer")? {
        admin::Answer::Done(said) => println!("{said}"),
        admin::Answer::Error(e) => bail!("{e}"),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes through the running node's admin socket, or, when no node
/// runs, straight into the store.
pub(super) fn publish(dir: &DataDir, request: admin::Request) -> Result<()> {
    let answer = via_node_or_store(dir, &request, Ok, |store| {
        let identity = Arc::new(load_identity(dir)?);
        Ok(admin::handle(
            store,
            &identity,
            &serde_json::to_string(&request)?,
        ))
    })?;
    match answer {
        admin::Answer::Published { seq, id } => {
            println!("published entry {seq} {id}");
            Ok(())
        }
        admin::Answer::Done(message) => {
            println!("{message}");
            Ok(())
        }
        admin::Answer::Status(_)
        | admin::Answer::Doctor(_)
        | admin::Answer::Stream
        | admin::Answer::Changed(_) => {
            bail!("unexpected answer from the node")
        }
        admin::Answer::Error(e) => Err(Refused(e).into()),
    }
}

/// The node answered, and refused: nothing was published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// A post sent but not answered, kept in the data dir as JSON (its request
/// id, and a blake3 hash of its text and reply_to) so that the same command
/// run again sends it with the same request id, and the node publishes it
/// once. A hash, not the text: the file stays a hundred bytes, and the
/// post's words are not copied anywhere else.
const PENDING_POST: &str = "post.pending";

/// Reads a picture file, refusing one over the size limit before reading it.
fn read_picture(path: &Path) -> Result<Vec<u8>> {
    use anyhow::Context;
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > crate::picture::MAX_FILE as u64 {
        bail!(
            "{}: {}",
            path.display(),
            crate::picture::PictureError::TooLarge(size as usize)
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Prepares the pictures `files` (with their alt texts) and keeps them in
/// the data dir's blob folder, where the node reads them back.
fn prepare_pictures(
    dir: &DataDir,
    files: &[PathBuf],
    alts: Vec<String>,
) -> Result<Vec<crate::log::record::Picture>> {
    use crate::store::compose::{Attachment, MAX_PICTURES, pictures};
    if files.len() > MAX_PICTURES {
        bail!(
            "{} pictures: a post takes at most {MAX_PICTURES}",
            files.len()
        );
    }
    let mut attachments = Vec::new();
    for (file, alt) in files.iter().zip(alts) {
        let prepared = crate::picture::prepare(&read_picture(file)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        attachments.push(Attachment { prepared, alt });
    }
    let (pictures, bytes) = pictures(attachments).map_err(|e| anyhow::anyhow!("{e}"))?;
    keep_blobs(dir, &bytes)?;
    Ok(pictures)
}

/// Keeps `blobs` in the data dir's blob folder, durably.
fn keep_blobs(dir: &DataDir, blobs: &[Vec<u8>]) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    if !dir.root().is_dir() {
        bail!(
            "no data directory at {}; run `capsule init` first",
            dir.root().display()
        );
    }
    let folder = crate::store::blobs::Blobs::open(&dir.blobs())?;
    for bytes in blobs {
        folder.put(bytes)?;
    }
    Ok(())
}

pub(super) fn profile(
    dir: &DataDir,
    name: String,
    bio: String,
    avatar: Option<&Path>,
) -> Result<ExitCode> {
    let avatar = match avatar {
        Some(file) => {
            let encoded = crate::picture::prepare_avatar(&read_picture(file)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let blob = crate::store::compose::blob_ref(&encoded);
            keep_blobs(dir, &[encoded.bytes])?;
            Some(blob)
        }
        None => None,
    };
    publish(dir, admin::Request::Profile { name, bio, avatar })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn post(
    dir: &DataDir,
    text: String,
    reply_to: Option<EntryId>,
    attach: &[PathBuf],
    alts: Vec<String>,
) -> Result<ExitCode> {
    let reply_to = reply_to.map(|id| id.to_string());
    let pictures = prepare_pictures(dir, attach, alts)?;
    let pending = dir.root().join(PENDING_POST);
    let post = {
        let mut hasher = blake3::Hasher::new();
        hasher.update(text.as_bytes());
        hasher.update(b"\0");
        hasher.update(reply_to.as_deref().unwrap_or_default().as_bytes());
        for p in &pictures {
            hasher.update(&p.blob.hash);
            hasher.update(p.alt.as_bytes());
        }
        hasher.finalize().to_hex().to_string()
    };
    let request = std::fs::read(&pending)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|p| p["post"] == post.as_str())
        .and_then(|p| p["request"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            hex::encode(id)
        });
    // Best effort: without the file (no data dir yet, a full disk) the post
    // still goes; only a retry of it would not be recognised.
    if dir.root().is_dir() {
        let _ = write_private(
            &pending,
            &serde_json::json!({ "request": request, "post": post }).to_string(),
        );
    }
    let sent = publish(
        dir,
        admin::Request::Post {
            text,
            reply_to,
            request: Some(request),
            pictures,
        },
    );
    match sent {
        Ok(()) => {
            let _ = std::fs::remove_file(&pending);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is::<Refused>() => {
            let _ = std::fs::remove_file(&pending);
            Err(e)
        }
        Err(e) => Err(e.context(
            "the post may have been published before its answer was lost; run the same command again: it is sent with the same request id, and the node publishes it once",
        )),
    }
}

/// Writes `text` to `path` (mode 0600) by a rename, so a crash leaves the
/// old file or the new one.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

pub(super) fn delete(dir: &DataDir, seq: u64) -> Result<ExitCode> {
    publish(dir, admin::Request::Delete(seq))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn log(dir: &DataDir, author: Option<AuthorKey>, as_json: bool) -> Result<ExitCode> {
    let author = match author {
        Some(a) => a,
        None => load_identity(dir)?.author(),
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // A running node holds the store: ask it to write the log for us.
    let socket = admin_socket(dir);
    let request = admin::Request::Log {
        author: author.to_string(),
        json: as_json,
    };
    let written = match admin::call_streaming(&socket, &request, &mut out) {
        Some(result) => result,
        None => {
            let store = super::open_store_without_node(dir)?;
            crate::node::log_lines::write_log(&store, &author, as_json, &mut out)
        }
    };
    match written {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`capsule log | head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// `block`, `mute`, `unblock`, `unmute` (`change` is the command's name).
pub(super) fn block(dir: &DataDir, author: AuthorKey, change: &str) -> Result<ExitCode> {
    let request = admin::Request::Block {
        author: author.to_string(),
        change: change.to_string(),
    };
    let changed = via_node_or_store(
        dir,
        &request,
        |answer| match answer {
            admin::Answer::Changed(changed) => Ok(changed),
            admin::Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the node: {other:?}"),
        },
        |store| {
            let identity = Arc::new(load_identity(dir)?);
            Ok(crate::store::compose::block(
                store, &identity, author, change,
            )?)
        },
    )?;
    let said = match (change, changed) {
        ("block", true) => {
            "blocked: your node no longer mirrors, serves, shows or takes their log; what it holds stays, unserved, until `capsule unblock`"
        }
        ("mute", true) => "muted: left out of your home timeline",
        ("unblock", true) => "unblocked: your node serves and takes their log again",
        ("unmute", true) => "unmuted",
        ("block", false) => "already blocked",
        ("mute", false) => "already muted or blocked",
        ("unblock", false) => "was not blocked",
        _ => "was not muted",
    };
    println!("{author} {said}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn mirror(dir: &DataDir, author: AuthorKey, add: bool) -> Result<ExitCode> {
    let request = admin::Request::Mirror {
        author: author.to_string(),
        add,
    };
    let changed = via_node_or_store(
        dir,
        &request,
        |answer| match answer {
            admin::Answer::Changed(changed) => Ok(changed),
            admin::Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the node: {other:?}"),
        },
        |store| {
            Ok(if add {
                store.mirror(author)?
            } else {
                store.unmirror(author)?
            })
        },
    )?;
    match (add, changed) {
        (true, true) => println!("now mirroring {author}; the next sync fetches its log"),
        (true, false) => println!("already mirroring {author}"),
        (false, true) => println!("no longer mirroring {author}; what this node holds of it stays"),
        (false, false) => println!("{author} was not mirrored"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `capsule doctor`: through the running node, else on the data directory
/// (with the store's full integrity check). Exit 1 when a check fails.
pub(super) fn doctor(dir: &DataDir, as_json: bool) -> Result<ExitCode> {
    use crate::node::doctor;
    let report = match admin::call(&super::admin_socket(dir), &admin::Request::Doctor) {
        Some(answer) => {
            match anyhow::Context::context(answer, "the running node did not answer")? {
                admin::Answer::Doctor(report) => report,
                admin::Answer::Error(e) => bail!("{e}"),
                other => bail!("unexpected answer from the node: {other:?}"),
            }
        }
        None => {
            let owner = load_identity(dir)?.author();
            let integrity = if dir.store().exists() {
                match crate::store::check_integrity(&dir.store()) {
                    Ok(i) => Ok(i == crate::store::Integrity::Sound),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Err("there is no store yet: run `capsule init`".to_string())
            };
            let config = crate::node::config::load(dir.root())?;
            let facts = doctor::Facts {
                root: dir.root().to_path_buf(),
                owner,
                domain: config.domain.map(|d| (d, dir.root().join("acme"), None)),
                integrity: integrity.clone(),
                reach: None,
            };
            let store = match integrity {
                Ok(_) => Some(super::open_store_without_node(dir)?),
                Err(_) => None,
            };
            let report = doctor::to_json(&doctor::run(store.as_ref(), &facts));
            if let Some(store) = store {
                store.close()?;
            }
            report
        }
    };
    if as_json {
        println!("{report}");
    } else {
        print!("{}", doctor::render(&report));
    }
    Ok(if report["failing"].as_u64().unwrap_or(0) > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Leaves the mark `capsule doctor` looks for: the key has a copy elsewhere.
pub(super) fn mark_backed_up(dir: &DataDir) {
    let path = dir.root().join(crate::node::doctor::BACKUP_MARK);
    let now = crate::log::present::rfc3339(crate::clock::now_us());
    if let Err(e) = std::fs::write(&path, format!("{now}\n")) {
        tracing::warn!(error = %e, path = %path.display(), "cannot leave the backup mark");
    }
}
