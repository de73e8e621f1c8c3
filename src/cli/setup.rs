//! Setting a node up and running it: `init`, `up`, `passwd`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::args::UpArgs;
use super::{load_identity, runtime};
use crate::data_dir::DataDir;
use crate::gateway::passphrase;
use crate::identity::Identity;
use crate::mesh::address::PeerAddr;
use crate::node::config::{self, Settings};
use crate::node::{self, Listeners, NodeConfig};
use crate::store::Store;
use crate::store::signer::{SignerChange, Signing};
use std::sync::Arc;

pub(super) fn init(dir: &DataDir) -> Result<ExitCode> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.root())
        .with_context(|| format!("cannot create the data directory {}", dir.root().display()))?;
    let key_path = dir.identity();
    let identity = if key_path.exists() {
        let identity = Identity::load(&key_path)?;
        println!(
            "An identity already exists in {}; keeping it.",
            dir.root().display()
        );
        let store = Store::open(&dir.store())?;
        if let Some(why) = store.signing(&identity.author())?.refusal() {
            println!("This node will not post yet: {why}.");
        }
        store.close()?;
        identity
    } else {
        refuse_without_key(dir)?;
        let identity = Identity::generate();
        identity.save_new(&key_path)?;
        // A fresh key beside a fresh store: its log begins here.
        let store = Store::open(&dir.store())?;
        store.change_signer(identity.author(), SignerChange::Begin)?;
        store.close()?;
        println!("Created a new identity in {}.", dir.root().display());
        println!(
            "Keep {} safe: it is your identity. Whoever has it can post as you; if it is lost, your log cannot grow. Back it up with `capsule export --identity -o FILE`.",
            key_path.display()
        );
        identity
    };
    println!("Your author key: {}", identity.author());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn up(dir: &DataDir, args: UpArgs) -> Result<ExitCode> {
    let flags = Settings {
        listen: args.listen,
        sync_listen: args.sync_listen,
        domain: args.domain,
        email: args.email,
        acme_directory: args.acme_directory,
        https_listen: args.https_listen,
        public_sync: args.public_sync,
        peers: args.peers.iter().map(|p| p.to_string()).collect(),
        sync_interval: args.sync_interval,
        metrics_listen: args.metrics_listen,
        media_budget: args.media_budget,
        handle: args.handle,
        insecure_federation: args.insecure_federation,
        acme_root: args.acme_root,
        ca_root: args.ca_root,
    };
    let config = NodeConfig::new(dir.root(), flags.over(config::load(dir.root())?))?;
    if !dir.identity().exists() {
        init(dir)?;
    }
    let identity = load_identity(dir)?;
    let store = Arc::new(super::open_checked_store(dir)?);
    restore_before_signing(&store, &identity, &config)?;
    let Ok(store) = Arc::try_unwrap(store) else {
        bail!("the store is still in use after restoring");
    };
    if config.https.is_none() && !config.passphrase.exists() {
        println!("To post from the browser, set a passphrase: capsule passwd");
    }
    match node::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open files"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    crate::allocator::return_large_allocations();
    runtime()?.block_on(async {
        let listeners = Listeners::bind(&config, &identity).await?;
        node::run(identity, store, config, listeners, node::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A data directory with a store but no key: the key is lost or elsewhere,
/// and a new one would be a new identity beside the old log. Refused.
pub(crate) fn refuse_without_key(dir: &DataDir) -> Result<()> {
    if dir.store().exists() {
        bail!(
            "{} holds a store but no identity.key: your key is missing, and a new one would start a new identity beside your log. Put your key backup back with `capsule restore KEYFILE --from KEY@HOST:PORT` (it fetches anything newer from a follower), or, to start a new identity, use another --data-dir",
            dir.root().display()
        );
    }
    Ok(())
}

/// A node whose store does not hold its key's log asks every peer it knows
/// for that log before anything else, and signs again once it holds it.
fn restore_before_signing(
    store: &Arc<Store>,
    identity: &Identity,
    config: &NodeConfig,
) -> Result<()> {
    let author = identity.author();
    match store.signing(&author)? {
        Signing::Ready => return Ok(()),
        Signing::Elsewhere { .. } => {
            if let Some(why) = store.signing(&author)?.refusal() {
                tracing::error!("{why}");
            }
            return Ok(());
        }
        Signing::Restoring => {}
    }
    let mut peers: Vec<PeerAddr> = config.peers.clone();
    for (key, row) in store.addresses()? {
        if !peers.iter().any(|p| p.key == key) {
            peers.push(PeerAddr {
                key,
                host_port: row.host_port,
            });
        }
    }
    if peers.is_empty() {
        tracing::warn!(
            "your key's log is not in this store and no peer is known to ask for it: the node serves, but signs nothing until `capsule restore --from KEY@HOST:PORT`"
        );
        return Ok(());
    }
    tracing::info!(
        peers = peers.len(),
        "restoring your log from the peers this node knows before signing"
    );
    let reached = super::restore::fetch_from_peers(
        store,
        identity,
        &peers,
        std::time::Duration::from_secs(10),
        false,
    )?;
    match store.head(&author)? {
        Some(head) if reached > 0 => {
            store.change_signer(author, SignerChange::Restored)?;
            tracing::info!(
                seq = head.seq,
                reached,
                "your log is restored; the next post is seq {}",
                head.seq + 1
            );
        }
        _ => tracing::warn!(
            reached,
            "no peer gave your log back: the node serves, but signs nothing until `capsule restore --from KEY@HOST:PORT`"
        ),
    }
    Ok(())
}

pub(super) fn passwd(dir: &DataDir) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !dir.root().exists() {
        init(dir)?;
    }
    let phrase = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New passphrase: ")?;
        passphrase::acceptable(&first)?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the two passphrases differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    passphrase::set(&dir.root().join(passphrase::FILE), &phrase)?;
    println!("Passphrase set. Log in at /login on your node.");
    Ok(ExitCode::SUCCESS)
}
