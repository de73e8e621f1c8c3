//! Setting a node up and running it: `init`, `up`, `passwd`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::args::UpArgs;
use super::{load_identity, open_store, runtime};
use crate::data_dir::DataDir;
use crate::gateway::{https, passphrase};
use crate::identity::Identity;
use crate::node::admin;
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

pub(super) fn up(dir: &DataDir, mut args: UpArgs) -> Result<ExitCode> {
    let file = crate::node::config::load(dir.root())?;
    args.listen = args.listen.or(file.listen);
    args.domain = args.domain.or(file.domain);
    args.email = args.email.or(file.email);
    args.public_sync = args.public_sync.or(file.public_sync);
    args.metrics_listen = args.metrics_listen.or(file.metrics_listen);
    for peer in file.peers {
        args.peers.push(
            peer.parse()
                .map_err(|e: crate::mesh::address::AddressError| {
                    anyhow::anyhow!("peer {peer:?} in {}: {e}", crate::node::config::FILE)
                })?,
        );
    }
    let sync_listen = args
        .sync_listen
        .or(file.sync_listen)
        .unwrap_or_else(|| "127.0.0.1:4433".parse().expect("valid address"));
    let sync_interval = args.sync_interval.or(file.sync_interval).unwrap_or(60.0);
    if !(sync_interval.is_finite() && sync_interval >= 0.1) {
        bail!("--sync-interval {sync_interval} is not a number of seconds of at least 0.1");
    }
    let https_listen = args.https_listen.or(file.https_listen);
    let acme_directory = args.acme_directory.or(file.acme_directory);
    if args.domain.is_none()
        && (args.email.is_some()
            || https_listen.is_some()
            || acme_directory.is_some()
            || args.acme_root.is_some())
    {
        bail!("--email, --https-listen and --acme-directory need --domain");
    }
    if let Some(given) = &args.public_sync {
        match given.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => bail!("--public-sync {given:?} is not HOST:PORT"),
        }
    }
    if !dir.identity().exists() {
        init(dir)?;
    }
    let identity = load_identity(dir)?;
    let store = open_store(dir)?;
    let https = args.domain.map(|domain| {
        let listen = https_listen.unwrap_or_else(|| "[::]:443".parse().expect("valid address"));
        let acme = https::Acme {
            domain,
            email: args.email,
            directory: acme_directory.unwrap_or_else(|| https::LETS_ENCRYPT.to_string()),
            cache: dir.root().join("acme"),
            extra_root: args.acme_root,
        };
        (listen, acme)
    });
    let listen = args.listen.unwrap_or_else(|| match https {
        Some(_) => "[::]:80".parse().expect("valid address"),
        None => "127.0.0.1:8080".parse().expect("valid address"),
    });
    if https.is_none() && !dir.root().join(passphrase::FILE).exists() {
        println!("To post from the browser, set a passphrase: capsule passwd");
    }
    runtime()?.block_on(crate::node::run(
        identity,
        store,
        crate::node::NodeConfig {
            listen,
            sync_listen,
            https,
            passphrase: dir.root().join(passphrase::FILE),
            metrics_listen: args.metrics_listen,
            peers: args.peers,
            mesh: crate::mesh::scheduler::MeshConfig {
                interval: std::time::Duration::from_secs_f64(sync_interval),
                web_root: args.ca_root,
                ..Default::default()
            },
            public_sync: args.public_sync,
        },
        dir.root().join(admin::SOCKET_FILE),
    ))?;
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
