//! `capsule restore`: bringing the owner's log back before the node signs
//! again, so that a lost data directory never becomes a forked log.
//!
//! The key goes in place first; then the own log comes from peers that hold
//! it (a follower's node mirrors it) or from an export, verified entry by
//! entry as any sync or import is; only then does the store mark the log as
//! whole here (see [`crate::store::signer`]) and the node sign at head + 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{load_identity, runtime};
use crate::data_dir::DataDir;
use crate::identity::Identity;
use crate::mesh::address::PeerAddr;
use crate::store::signer::{SignerChange, Signing};
use crate::store::tables::AddressSource;
use crate::store::{AddressUpdate, Store};
use crate::sync::network::{self, SyncConfig};

/// What `capsule restore` was asked to do.
pub(super) struct RestoreArgs {
    pub keyfile: Option<PathBuf>,
    pub from: Vec<PeerAddr>,
    pub archive: Option<PathBuf>,
    pub new_log: bool,
    pub yes: bool,
    pub timeout: Duration,
}

pub(super) fn restore(dir: &DataDir, args: RestoreArgs) -> Result<ExitCode> {
    if args.from.is_empty() && args.archive.is_none() && !args.new_log {
        bail!(
            "say where your log is: --from KEY@HOST:PORT (a node that mirrors it, such as a follower's; repeatable), --archive FILE (an export), or --new-log if nobody holds an entry of it"
        );
    }
    let identity = put_key_in_place(dir, args.keyfile.as_deref())?;
    if args.keyfile.is_some() {
        // Restored from a backup: there is a copy of the key elsewhere.
        super::owner::mark_backed_up(dir);
    }
    let author = identity.author();
    let store = Arc::new(open_or_create(dir)?);
    if let Some(proof) = store.fork_of(&author)? {
        bail!(
            "your log is forked at seq {}: two different entries were signed for it, and no restore can undo that. Every node that holds both refuses your log from then on; start a new identity in a new data directory",
            proof.first.seq()
        );
    }
    if args.new_log {
        return declare_new(&store, &identity, args.yes);
    }
    let before = store.head(&author)?.map_or(0, |h| h.seq);
    let mut sources = 0;
    if let Some(file) = &args.archive {
        let imported = match super::archive::import_file(&store, file)? {
            Ok(imported) => imported,
            Err(code) => return Ok(code),
        };
        super::archive::report_imported(&imported);
        sources += 1;
    }
    if !args.from.is_empty() {
        sources += fetch_from_peers(&store, &identity, &args.from, args.timeout, true)?;
        if sources == 0 {
            bail!(
                "no peer could be reached, so this node still cannot know your newest entry; it signs nothing until a restore reaches one (try again, or name another with --from)"
            );
        }
    }
    let Some(head) = store.head(&author)? else {
        bail!(
            "none of these holds an entry of {author}, so your log cannot be restored from them. Name a node that mirrors it (a follower's), or, if this log really is new, run `capsule restore --new-log`"
        );
    };
    let standing = store.change_signer(author, SignerChange::Restored)?;
    debug_assert_eq!(standing, Signing::Ready);
    println!(
        "your log is back: {} entries (head seq {}, {} fetched now); your next post is seq {}",
        head.seq,
        head.seq,
        head.seq - before,
        head.seq + 1
    );
    if args.from.is_empty() {
        println!(
            "note: this export may be older than what your followers hold; if you posted after making it, run `capsule restore --from KEY@HOST:PORT` too before posting"
        );
    }
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Puts `keyfile` in place as the data directory's identity (or keeps the
/// one there when it is the same key), and returns it.
fn put_key_in_place(dir: &DataDir, keyfile: Option<&Path>) -> Result<Identity> {
    use std::os::unix::fs::DirBuilderExt;
    let here = dir.identity();
    let Some(keyfile) = keyfile else {
        if !here.exists() {
            bail!(
                "no identity.key in {}: give your key backup, `capsule restore KEYFILE --from KEY@HOST:PORT`",
                dir.root().display()
            );
        }
        return load_identity(dir);
    };
    let backup = Identity::load(keyfile)
        .with_context(|| format!("cannot read the key backup {}", keyfile.display()))?;
    if here.exists() {
        let existing = load_identity(dir)?;
        if existing.author() != backup.author() {
            bail!(
                "{} already holds another identity ({}); restore into an empty data directory (--data-dir NEW)",
                dir.root().display(),
                existing.author()
            );
        }
        return Ok(existing);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.root())
        .with_context(|| format!("cannot create the data directory {}", dir.root().display()))?;
    backup.save_new(&here)?;
    println!(
        "restored identity {} to {}",
        backup.author(),
        here.display()
    );
    Ok(backup)
}

fn open_or_create(dir: &DataDir) -> Result<Store> {
    if dir.store().exists() {
        super::open_checked_store(dir)
    } else {
        Ok(Store::open(&dir.store())?)
    }
}

/// Syncs with each peer in turn (remembering its address for `capsule up`
/// when `remember`); how many were reached.
pub(super) fn fetch_from_peers(
    store: &Arc<Store>,
    identity: &Identity,
    peers: &[PeerAddr],
    timeout: Duration,
    remember: bool,
) -> Result<usize> {
    let author = identity.author();
    let runtime = runtime()?;
    let mut reached = 0;
    for peer in peers.iter() {
        if remember {
            store.update_address(
                peer.key,
                AddressUpdate::Learn {
                    host_port: peer.host_port.clone(),
                    web: None,
                    source: AddressSource::Bootstrap,
                },
            )?;
        }
        let session = runtime.block_on(async {
            let addr = peer.resolve().await?;
            let config = SyncConfig { idle: timeout };
            let report = tokio::time::timeout(
                timeout * 4,
                network::sync_once(Arc::clone(store), identity, peer.key, addr, config, None),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {} s", (timeout * 4).as_secs()))??;
            anyhow::Ok(report)
        });
        match session {
            Ok(report) => {
                reached += 1;
                let head = store.head(&author)?.map_or(0, |h| h.seq);
                println!(
                    "{peer}: received {} entries; your log here now reaches seq {head}",
                    report.stats.entries_stored
                );
            }
            Err(e) => eprintln!("{peer}: not reached: {e:#}"),
        }
    }
    Ok(reached)
}

/// `--new-log`: the owner says nobody holds an entry of this key.
fn declare_new(store: &Store, identity: &Identity, yes: bool) -> Result<ExitCode> {
    use std::io::{BufRead, IsTerminal, Write};
    let author = identity.author();
    if let Some(head) = store.head(&author)? {
        bail!(
            "this store already holds your log up to seq {}: it is not new. To sign again, restore it from a peer: `capsule restore --from KEY@HOST:PORT`",
            head.seq
        );
    }
    eprintln!(
        "warning: you are declaring that no one holds an entry signed by {author}. If any node does (a follower, an old backup), your next post forks your log, and every node that sees both entries refuses your log from then on. If in doubt, restore from a follower instead: `capsule restore --from KEY@HOST:PORT`."
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("nothing changed: give --yes to declare the log new without a terminal");
        }
        eprint!("Type 'new' to declare this log new: ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "new" {
            bail!("nothing changed");
        }
    }
    store.change_signer(author, SignerChange::Restored)?;
    println!("your log starts here: your next post is seq 1");
    Ok(ExitCode::SUCCESS)
}
