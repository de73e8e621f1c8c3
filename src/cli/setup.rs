//! Setting a node up and running it: `init`, `up`, `passwd`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::args::UpArgs;
use super::{load_identity, runtime};
use crate::data_dir::DataDir;
use crate::gateway::passphrase;
use crate::identity::Identity;
use crate::node::config::{self, Settings};
use crate::node::{self, Listeners, NodeConfig};
use crate::store::Store;

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
        identity
    } else {
        let identity = Identity::generate();
        identity.save_new(&key_path)?;
        println!("Created a new identity in {}.", dir.root().display());
        println!(
            "Keep {} safe: it is your identity. Whoever has it can post as you; if it is lost, your log cannot grow. Back it up with `capsule export --identity -o FILE`.",
            key_path.display()
        );
        identity
    };
    Store::open(&dir.store())?.close()?;
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
        acme_root: args.acme_root,
        ca_root: args.ca_root,
    };
    let config = NodeConfig::new(dir.root(), flags.over(config::load(dir.root())?))?;
    if !dir.identity().exists() {
        init(dir)?;
    }
    let identity = load_identity(dir)?;
    let store = super::open_checked_store(dir)?;
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
