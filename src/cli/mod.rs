//! The `capsule` command line: the words ([`args`]), then one file per
//! group of commands. The only place errors become `anyhow` and exit codes.
//!
//! - [`args`]: every subcommand and flag, with its help.
//! - [`setup`]: `init`, `up`, `passwd`.
//! - [`owner`]: `post`, `delete`, `profile`, `follow`, `mirror`, `status`,
//!   `peers`, `log`: through the running node, else on the store.
//! - [`archive`]: `export`, `import`, `verify`.
//! - [`sync`]: `sync`, `serve-sync`.
//! - [`mod@restore`]: `restore`: your log back from peers or an export.
//! - [`service`]: `service install`, the systemd unit.
//! - [`mod@bench`]: `capsule bench`: verify, sync (also through a relay
//!   making a real link's delay and loss) and http, each beside its bound
//!   measured in the same run. Like every command here it prints its
//!   report and meets its failures as `anyhow` errors.

pub mod archive;
pub mod args;
pub mod bench;
pub mod owner;
pub mod restore;
pub mod service;
pub mod setup;
pub mod sync;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::data_dir::DataDir;
use crate::identity::Identity;
use crate::node::admin;
use crate::store::Store;
pub use args::{Bench, BenchArgs, Cli, Command, SessionArgs, UpArgs};

/// Exit code when verification finds a bad entry (as opposed to an error
/// that kept it from running).
pub const EXIT_INVALID: u8 = 3;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_paired();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: --log-level {}: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    // A service's data directory has its own default, not the caller's.
    let explicit_dir = cli.data_dir.clone();
    let root = match cli.data_dir {
        Some(dir) => dir,
        None => DataDir::default_root().context(
            "cannot find a home for the data directory; pass --data-dir or set CAPSULE_HOME",
        )?,
    };
    let dir = DataDir::new(root);
    match cli.command {
        Command::Init => setup::init(&dir),
        Command::Up(args) => setup::up(&dir, *args),
        Command::Passwd => setup::passwd(&dir),
        Command::Follow { target, ca_root } => owner::follow(&dir, &target, ca_root.as_deref()),
        Command::Status { json } => owner::status(&dir, json, false),
        Command::Doctor { json } => owner::doctor(&dir, json),
        Command::Peers { json } => owner::status(&dir, json, true),
        Command::Unfollow { author } if author.starts_with('@') || author.starts_with("acct:") => {
            owner::fediverse(&dir, admin::Request::FediverseUnfollow(author))
        }
        Command::Unfollow { author } => {
            let author: crate::identity::AuthorKey = author.parse().map_err(|e| {
                anyhow::anyhow!("{author:?} is neither an author key nor @user@host: {e}")
            })?;
            owner::publish(&dir, admin::Request::Unfollow(author.to_string()))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Profile { name, bio, avatar } => {
            owner::profile(&dir, name, bio, avatar.as_deref())
        }
        Command::Post {
            text,
            reply_to,
            attach,
            alt,
        } => owner::post(&dir, text, reply_to, &attach, alt),
        Command::Delete { seq } => owner::delete(&dir, seq),
        Command::Log { author, json } => owner::log(&dir, author, json),
        Command::Export {
            identity: true,
            output,
            ..
        } => archive::export_identity(&dir, &output),
        Command::Export {
            author,
            all,
            output,
            ..
        } => archive::export(&dir, author, all, &output),
        Command::Import { file } => archive::import(&dir, &file),
        Command::Verify { file, store } => match file {
            Some(file) if !store => archive::verify_archive(&file),
            _ => archive::verify_store(&dir),
        },
        Command::Mirror { author } => owner::mirror(&dir, author, true),
        Command::Block { author } => owner::block(&dir, author, "block"),
        Command::Unblock { author } => owner::block(&dir, author, "unblock"),
        Command::Mute { author } => owner::block(&dir, author, "mute"),
        Command::Unmute { author } => owner::block(&dir, author, "unmute"),
        Command::Restore {
            keyfile,
            from,
            archive,
            new_log,
            yes,
            timeout,
        } => restore::restore(
            &dir,
            restore::RestoreArgs {
                keyfile,
                from,
                archive,
                new_log,
                yes,
                timeout: std::time::Duration::from_secs(timeout.max(1)),
            },
        ),
        Command::Unmirror { author } => owner::mirror(&dir, author, false),
        Command::Sync {
            peer,
            session,
            json,
        } => sync::sync(&dir, peer, session.config(), json),
        Command::ServeSync { listen, session } => sync::serve_sync(&dir, listen, session.config()),
        Command::Service(args::Service::Install {
            user,
            unit_dir,
            binary,
            force,
        }) => service::install(service::InstallArgs {
            data_dir: explicit_dir,
            user,
            unit_dir,
            binary,
            force,
        }),
        Command::Bench(BenchArgs {
            what: Bench::Verify { entries },
        }) => {
            crate::cli::bench::verify(entries)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            what:
                Bench::Sync {
                    authors,
                    entries_per_author,
                    diff_authors,
                    diff,
                    rtt_ms,
                    loss,
                    seed,
                    congestion,
                    media_posts,
                    media_kb,
                    media_samples,
                },
        }) => {
            crate::cli::bench::sync(
                authors,
                entries_per_author,
                diff_authors,
                diff,
                crate::cli::bench::sync::LinkArgs { rtt_ms, loss, seed },
                congestion.unwrap_or_else(crate::sync::transport::Congestion::chosen),
            )?;
            if media_posts > 0 {
                println!();
                let figures = crate::cli::bench::media::measure_media(
                    media_posts,
                    (media_kb * 1000) as usize,
                    media_samples,
                    1_000_000,
                )?;
                crate::cli::bench::media::report(&figures);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            what:
                Bench::Fanout {
                    followers,
                    servers,
                    on_servers,
                    samples,
                },
        }) => {
            let figures =
                crate::cli::bench::fanout::measure(followers, servers, on_servers, samples)?;
            crate::cli::bench::fanout::report(&figures);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            what: Bench::Http { posts, seconds },
        }) => {
            crate::cli::bench::http::run(posts, seconds)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn load_identity(dir: &DataDir) -> Result<Identity> {
    let path = dir.identity();
    if !path.exists() {
        setup::refuse_without_key(dir)?;
        bail!(
            "no identity in {}; run `capsule init` first (or point --data-dir at your data directory)",
            dir.root().display()
        );
    }
    warn_if_readable_by_others(&path);
    Ok(Identity::load(&path)?)
}

/// A key file others can read is a key others may have copied.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.is_file()
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

pub(crate) fn open_store(dir: &DataDir) -> Result<Store> {
    if !dir.store().exists() {
        bail!(
            "no store in {}; run `capsule init` first (or point --data-dir at your data directory)",
            dir.root().display()
        );
    }
    Ok(Store::open(&dir.store())?)
}

/// Opens the store for a node that is to serve it, after checking every
/// page of the file: a damaged store is refused with what to do, rather
/// than served.
pub(crate) fn open_checked_store(dir: &DataDir) -> Result<Store> {
    if dir.store().exists() {
        let started = std::time::Instant::now();
        let integrity = crate::store::check_integrity(&dir.store())?;
        tracing::debug!(took = ?started.elapsed(), ?integrity, "store integrity checked");
        if integrity == crate::store::Integrity::Repaired {
            eprintln!(
                "warning: the store {} was damaged and has been repaired to its last whole commit; entries mirrored in the last moments before may be fetched again",
                dir.store().display()
            );
        }
    }
    open_store(dir)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Where the running node's admin socket is.
pub(crate) fn admin_socket(dir: &DataDir) -> std::path::PathBuf {
    dir.root().join(admin::SOCKET_FILE)
}

/// Opens the store when the admin socket did not answer. If the socket is
/// there and a process holds the store all the same, a node is running but
/// its socket is broken: say so, rather than that the store is in use.
pub(crate) fn open_store_without_node(dir: &DataDir) -> Result<Store> {
    match open_store(dir) {
        Err(e)
            if admin_socket(dir).exists()
                && matches!(
                    e.downcast_ref::<crate::store::StoreError>(),
                    Some(crate::store::StoreError::Locked(_))
                ) =>
        {
            let socket = admin_socket(dir);
            let why = match std::os::unix::net::UnixStream::connect(&socket) {
                Err(e) => e.to_string(),
                Ok(_) => "it accepted, then did not answer".to_string(),
            };
            bail!(
                "a capsule node is running on {} but does not answer on its admin socket {} ({why}); see its log, and restart it",
                dir.root().display(),
                socket.display()
            )
        }
        other => other,
    }
}

/// Asks the running node (through its admin socket) with `request` and reads
/// its answer with `answered`; when no node runs, opens the store here and
/// does `locally` instead, then closes it.
pub(crate) fn via_node_or_store<T>(
    dir: &DataDir,
    request: &admin::Request,
    answered: impl FnOnce(admin::Answer) -> Result<T>,
    locally: impl FnOnce(&Store) -> Result<T>,
) -> Result<T> {
    match admin::call(&admin_socket(dir), request) {
        Some(answer) => answered(answer.context("the running node did not answer")?),
        None => {
            let store = open_store_without_node(dir)?;
            let done = locally(&store)?;
            store.close()?;
            Ok(done)
        }
    }
}
