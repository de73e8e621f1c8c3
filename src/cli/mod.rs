//! The `capsule` command line: one function per subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::archive;
use crate::archive::audit::{self, VerifyError};
use crate::data_dir::DataDir;
use crate::gateway::https;
use crate::gateway::passphrase;
use crate::identity::{AuthorKey, Identity};
use crate::log::entry::EntryId;
use crate::log::verify::Summary;
use crate::mesh::address::PeerAddr;
use crate::node::admin;
use crate::store::{ImportMsg, Store};
use crate::sync::network::{self, SyncConfig};
use crate::sync::transport;

/// Exit code when verification finds a bad entry (as opposed to an error
/// that kept it from running).
pub const EXIT_INVALID: u8 = 3;

/// Capsule: your microblog as a signed, hash-chained log that your friends'
/// nodes mirror.
///
/// Start with `capsule up` (your node, on http://127.0.0.1:8080), or
/// `capsule init` then `capsule post "hello"`. Everything lives in
/// one data directory: --data-dir, else $CAPSULE_HOME, else
/// ~/.local/share/capsule.
///
/// Exit codes: 0 success, 1 error, 2 bad command line, 3 verification found
/// an invalid entry.
#[derive(Debug, Parser)]
#[command(name = "capsule", version, about, long_about)]
pub struct Cli {
    /// Where the node keeps its key and store.
    #[arg(long, global = true, env = "CAPSULE_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How much the node logs to standard error: error, warn, info, debug
    /// or trace (or a tracing filter such as `capsule=debug,quinn=warn`).
    #[arg(long, global = true, default_value = "info", env = "CAPSULE_LOG")]
    pub log_level: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How `capsule up` serves. Each setting may also come from
/// `<data>/config.toml` (see [`crate::node::config`]); flags win.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where plain HTTP listens. Default: 127.0.0.1:8080, or [::]:80 (a
    /// redirect to HTTPS) with --domain.
    #[arg(long, env = "CAPSULE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Where the sync listener listens (QUIC, UDP). Default:
    /// 127.0.0.1:4433.
    #[arg(long, env = "CAPSULE_SYNC_LISTEN")]
    sync_listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS for this domain, with a certificate from an ACME CA
    /// (TLS-ALPN-01 on the HTTPS port: it must be reachable as port 443).
    #[arg(long, env = "CAPSULE_DOMAIN")]
    domain: Option<String>,
    /// A contact address for the CA (expiry warnings and the like).
    #[arg(long, env = "CAPSULE_EMAIL")]
    email: Option<String>,
    /// The CA's ACME directory. Let's Encrypt's staging directory,
    /// https://acme-staging-v02.api.letsencrypt.org/directory, is good for a
    /// first try. Default: Let's Encrypt.
    #[arg(long, env = "CAPSULE_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// Where HTTPS listens with --domain. Default: [::]:443.
    #[arg(long, env = "CAPSULE_HTTPS_LISTEN")]
    https_listen: Option<std::net::SocketAddr>,
    /// A root certificate (PEM) to trust for the ACME directory, besides
    /// the WebPKI roots: for a private or test CA.
    #[arg(long, value_name = "PEM", hide = true)]
    acme_root: Option<PathBuf>,
    /// The sync address other nodes are told (in /.well-known/capsule), as
    /// HOST:PORT, when it is not the one this node sees: behind a port
    /// forward, say. Default: the domain (or listen address) and the sync
    /// port.
    #[arg(long, value_name = "HOST:PORT", env = "CAPSULE_PUBLIC_SYNC")]
    public_sync: Option<String>,
    /// A root certificate (PEM) to trust, besides the WebPKI roots, when
    /// pulling peers' logs over HTTPS: for a private or test CA.
    #[arg(long, value_name = "PEM", hide = true)]
    ca_root: Option<PathBuf>,
    /// A peer to sync with, `KEY@HOST:PORT` (repeatable): the node starts
    /// from these and the nodes of the authors you follow.
    #[arg(long = "peer", value_name = "KEY@HOST:PORT")]
    peers: Vec<PeerAddr>,
    /// Seconds between sessions with each peer (±25 %; peers that fail are
    /// tried less and less often, at most hourly). Default: 60.
    #[arg(long, value_name = "SECONDS")]
    sync_interval: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback addresses
    /// only), e.g. 127.0.0.1:9184.
    #[arg(long, value_name = "ADDR", env = "CAPSULE_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory and a new identity (keeps an existing one).
    Init,
    /// Run your node: your microblog on the web, and sync with peers, until
    /// Ctrl-C. Creates the data directory and identity on first use.
    ///
    /// Without --domain it serves plain HTTP on 127.0.0.1:8080, for you
    /// alone. With --domain (whose DNS points at this machine) it serves
    /// HTTPS on port 443 with a Let's Encrypt certificate it obtains and
    /// renews itself, cached in the data directory, and port 80 redirects
    /// there.
    ///
    /// To write from the browser, set a passphrase first: `capsule passwd`.
    ///
    /// Every option can also be set in config.toml in the data directory,
    /// under the option's name with underscores (`sync_listen = "..."`,
    /// `peers = ["KEY@HOST:PORT"]`); options given here win.
    Up(Box<UpArgs>),
    /// Set the passphrase that logs you in at /login (asked twice on a
    /// terminal; else read as one line from standard input). A running node
    /// uses the new one at the next login.
    Passwd,
    /// Follow an author: a Follow record in your log, and your node mirrors
    /// their log and serves it to anyone who asks. Give `KEY@HOST:PORT` (their
    /// node's sync address, from their /.well-known/capsule) so your node
    /// dials it; or the KEY alone, and your node gets their log from the
    /// peers that hold it.
    Follow {
        /// `alice.example` (looked up at https://alice.example/.well-known/capsule),
        /// `KEY@HOST:PORT`, or `KEY`.
        target: String,
        /// A root certificate (PEM) to trust for the lookup, besides the
        /// WebPKI roots: for a private or test CA.
        #[arg(long, value_name = "PEM", hide = true)]
        ca_root: Option<PathBuf>,
    },
    /// What your node knows: your log, the logs you follow and mirror with
    /// their heads and newest entries, and the peers it dials with how the
    /// last attempts went. Works while the node runs.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The peers your node dials: address, where it came from, last success,
    /// failures in a row, next attempt.
    Peers {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop following an author (an Unfollow record). Your copy of their log
    /// stays, mirrored, until `capsule unmirror KEY`.
    Unfollow {
        /// The author key.
        author: AuthorKey,
    },
    /// Publish your profile: the name and bio at the top of your timeline.
    Profile {
        /// Your display name.
        #[arg(long, default_value = "")]
        name: String,
        /// A line or two about you.
        #[arg(long, default_value = "")]
        bio: String,
    },
    /// Publish a post, or a reply with --reply-to.
    Post {
        /// The text of the post.
        text: String,
        /// Reply to this entry (its 64-hex-digit id, from `capsule log`).
        #[arg(long, value_name = "ENTRY_ID", env = "CAPSULE_REPLY_TO")]
        reply_to: Option<EntryId>,
    },
    /// Delete one of your posts: publishes a tombstone, and every node drops
    /// the post's text. The entry itself stays, so the chain still verifies.
    Delete {
        /// The seq of the entry to delete (from `capsule log`).
        seq: u64,
    },
    /// Show a log: yours, or another author's that this node holds.
    Log {
        /// The author (52-character key); yours if omitted.
        author: Option<AuthorKey>,
        /// One JSON object per entry, per line.
        #[arg(long, env = "CAPSULE_JSON")]
        json: bool,
    },
    /// Write whole logs, with payloads, to a self-contained archive file; or,
    /// with --identity, a backup of your key.
    Export {
        /// The author to export; yours if omitted.
        author: Option<AuthorKey>,
        /// Export every log this node holds.
        #[arg(long, conflicts_with = "author")]
        all: bool,
        /// Write a backup of your identity (the secret key) instead. Keep it
        /// offline: whoever has it can post as you. To restore, copy it to
        /// identity.key in a data directory before `capsule init`.
        #[arg(long, conflicts_with_all = ["author", "all"])]
        identity: bool,
        /// The archive file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Import an archive. Everything in it is verified before anything is
    /// written: a bad archive changes nothing.
    Import {
        /// The archive file.
        file: PathBuf,
    },
    /// Verify an archive offline, or this node's whole store with --store.
    /// Prints how many entries and authors were verified; on failure names
    /// the first bad entry and why, and exits with code 3.
    Verify {
        /// The archive file.
        #[arg(required_unless_present = "store", conflicts_with = "store")]
        file: Option<PathBuf>,
        /// Verify every log in this node's store instead.
        #[arg(long)]
        store: bool,
    },
    /// Mirror an author: this node asks peers for their log at every sync,
    /// keeps it, and serves it to anyone who asks.
    Mirror {
        /// The author's key (52 characters).
        author: AuthorKey,
    },
    /// Stop mirroring an author. What this node holds of the log stays.
    Unmirror {
        /// The author's key.
        author: AuthorKey,
    },
    /// Sync once with a peer: both nodes bring each other's copies of the
    /// logs they both mirror up to date. Prints what was learned.
    Sync {
        /// The peer: its node key, @, and the address its sync listens on,
        /// e.g. KEY@alice.example:4433.
        peer: PeerAddr,
        /// Session limits.
        #[command(flatten)]
        session: SessionArgs,
        /// Print the report as one JSON object.
        #[arg(long, env = "CAPSULE_JSON")]
        json: bool,
    },
    /// Listen for sync sessions from peers until interrupted (Ctrl-C).
    ServeSync {
        /// The UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4433", env = "CAPSULE_SYNC_LISTEN")]
        listen: std::net::SocketAddr,
        /// Session limits.
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Measure this machine.
    Bench(BenchArgs),
}

/// Settings of a sync session, shared by `sync` and `serve-sync`.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// End a session when its peer says nothing for this many seconds.
    #[arg(
        long,
        default_value_t = 30,
        env = "CAPSULE_SYNC_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub timeout: u64,
}

impl SessionArgs {
    fn config(&self) -> SyncConfig {
        SyncConfig {
            idle: std::time::Duration::from_secs(self.timeout.max(1)),
        }
    }
}

/// `capsule bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which measurement.
    #[command(subcommand)]
    pub what: Bench,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Build, export and verify a log of N entries in a temporary directory,
    /// next to the raw batch signature-verification rate of this machine.
    Verify {
        /// How many entries.
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
    },
    /// Sync between two fresh stores in a temporary directory over real QUIC
    /// on 127.0.0.1, beside the in-process bound (verify and store the same
    /// entries with no network) and the raw batch-verify rate of this
    /// machine; then the reconciliation cost of a few new entries among many
    /// authors, at first contact and for a returning peer.
    Sync {
        /// Authors in the full sync.
        #[arg(long, default_value_t = 100)]
        authors: u64,
        /// Entries per author in the full sync.
        #[arg(long, default_value_t = 1_000)]
        entries_per_author: u64,
        /// Authors in the reconciliation runs (one entry each held by both
        /// sides; some one entry ahead on the responder).
        #[arg(long, default_value_t = 10_000)]
        diff_authors: u64,
        /// How many of those are one entry ahead.
        #[arg(long, default_value_t = 1)]
        diff: u64,
    },
    /// The web gateway under load (wrk, 64 connections) beside nginx serving
    /// files of the same sizes, in the same run: home page and entries.bin
    /// requests per second and p99 latency; also start-up time and idle
    /// memory. Needs wrk and nginx (Debian: wrk, nginx-light).
    Http {
        /// Posts in the node's log (the home page shows the newest 20;
        /// entries.bin returns them all, up to 10,000).
        #[arg(long, default_value_t = 1_000)]
        posts: u64,
        /// Seconds of each of the four loads.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let root = match cli.data_dir {
        Some(dir) => dir,
        None => DataDir::default_root().context(
            "cannot find a home for the data directory; pass --data-dir or set CAPSULE_HOME",
        )?,
    };
    let dir = DataDir::new(root);
    match cli.command {
        Command::Init => init(&dir),
        Command::Up(args) => up(&dir, *args),
        Command::Passwd => passwd(&dir),
        Command::Follow { target, ca_root } => follow(&dir, &target, ca_root.as_deref()),
        Command::Status { json } => status(&dir, json, false),
        Command::Peers { json } => status(&dir, json, true),
        Command::Unfollow { author } => {
            publish(&dir, admin::Request::Unfollow(author.to_string())).map(|()| ExitCode::SUCCESS)
        }
        Command::Profile { name, bio } => {
            publish(&dir, admin::Request::Profile { name, bio }).map(|()| ExitCode::SUCCESS)
        }
        Command::Post { text, reply_to } => post(&dir, text, reply_to),
        Command::Delete { seq } => delete(&dir, seq),
        Command::Log { author, json } => log(&dir, author, json),
        Command::Export {
            identity: true,
            output,
            ..
        } => export_identity(&dir, &output),
        Command::Export {
            author,
            all,
            output,
            ..
        } => export(&dir, author, all, &output),
        Command::Import { file } => import(&dir, &file),
        Command::Verify { file, store } => match file {
            Some(file) if !store => verify_archive(&file),
            _ => verify_store(&dir),
        },
        Command::Mirror { author } => mirror(&dir, author, true),
        Command::Unmirror { author } => mirror(&dir, author, false),
        Command::Sync {
            peer,
            session,
            json,
        } => sync(&dir, peer, session.config(), json),
        Command::ServeSync { listen, session } => serve_sync(&dir, listen, session.config()),
        Command::Bench(BenchArgs {
            what: Bench::Verify { entries },
        }) => {
            crate::bench::verify(entries)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            what:
                Bench::Sync {
                    authors,
                    entries_per_author,
                    diff_authors,
                    diff,
                },
        }) => {
            crate::bench::sync(authors, entries_per_author, diff_authors, diff)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchArgs {
            what: Bench::Http { posts, seconds },
        }) => {
            crate::bench::http::run(posts, seconds)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(dir: &DataDir) -> Result<ExitCode> {
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

fn up(dir: &DataDir, mut args: UpArgs) -> Result<ExitCode> {
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

fn status(dir: &DataDir, as_json: bool, peers_only: bool) -> Result<ExitCode> {
    let socket = dir.root().join(admin::SOCKET_FILE);
    let status = match admin::call(&socket, &admin::Request::Status) {
        Some(answer) => match answer.context("the running node did not answer")? {
            admin::Answer::Status(v) => v,
            admin::Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the node: {other:?}"),
        },
        None => {
            let identity = load_identity(dir)?;
            let store = open_store(dir)?;
            let v = crate::node::status::status(&store, identity.author())?;
            store.close()?;
            v
        }
    };
    match (as_json, peers_only) {
        (true, true) => println!("{}", status["peers"]),
        (true, false) => println!("{status}"),
        (false, _) => print!("{}", crate::node::status::render(&status, peers_only)),
    }
    Ok(ExitCode::SUCCESS)
}

fn follow(dir: &DataDir, target: &str, ca_root: Option<&Path>) -> Result<ExitCode> {
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

fn passwd(dir: &DataDir) -> Result<ExitCode> {
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

fn load_identity(dir: &DataDir) -> Result<Identity> {
    let path = dir.identity();
    if !path.exists() {
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
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

fn open_store(dir: &DataDir) -> Result<Store> {
    if !dir.store().exists() {
        bail!(
            "no store in {}; run `capsule init` first (or point --data-dir at your data directory)",
            dir.root().display()
        );
    }
    Ok(Store::open(&dir.store())?)
}

/// Publishes through the running node's admin socket, or, when no node
/// runs, straight into the store.
fn publish(dir: &DataDir, request: admin::Request) -> Result<()> {
    let socket = dir.root().join(admin::SOCKET_FILE);
    let answer = match admin::call(&socket, &request) {
        Some(answer) => answer.context("the running node did not answer")?,
        None => {
            let identity = Arc::new(load_identity(dir)?);
            let store = open_store(dir)?;
            let answer = admin::handle(&store, &identity, &serde_json::to_string(&request)?);
            store.close()?;
            answer
        }
    };
    match answer {
        admin::Answer::Published { seq, id } => {
            println!("published entry {seq} {id}");
            Ok(())
        }
        admin::Answer::Done(message) => {
            println!("{message}");
            Ok(())
        }
        admin::Answer::Status(_) | admin::Answer::Stream | admin::Answer::Changed(_) => {
            bail!("unexpected answer from the node")
        }
        admin::Answer::Error(e) => bail!("{e}"),
    }
}

fn post(dir: &DataDir, text: String, reply_to: Option<EntryId>) -> Result<ExitCode> {
    publish(
        dir,
        admin::Request::Post {
            text,
            reply_to: reply_to.map(|id| id.to_string()),
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

fn delete(dir: &DataDir, seq: u64) -> Result<ExitCode> {
    publish(dir, admin::Request::Delete(seq))?;
    Ok(ExitCode::SUCCESS)
}

fn log(dir: &DataDir, author: Option<AuthorKey>, as_json: bool) -> Result<ExitCode> {
    let author = match author {
        Some(a) => a,
        None => load_identity(dir)?.author(),
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // A running node holds the store: ask it to write the log for us.
    let socket = dir.root().join(admin::SOCKET_FILE);
    let request = admin::Request::Log {
        author: author.to_string(),
        json: as_json,
    };
    let written = match admin::call_streaming(&socket, &request, &mut out) {
        Some(result) => result,
        None => {
            let store = open_store(dir)?;
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

fn export_identity(dir: &DataDir, output: &Path) -> Result<ExitCode> {
    let identity = load_identity(dir)?;
    if output.exists() {
        bail!(
            "{} already exists; choose a new file for the backup",
            output.display()
        );
    }
    identity.save_new(output)?;
    println!(
        "wrote a backup of identity {} to {} (readable only by you).",
        identity.author(),
        output.display()
    );
    println!(
        "Keep it offline: whoever has it can post as you. To restore it, copy it to identity.key in the data directory before `capsule init`."
    );
    Ok(ExitCode::SUCCESS)
}

fn export(dir: &DataDir, author: Option<AuthorKey>, all: bool, output: &Path) -> Result<ExitCode> {
    let store = open_store(dir)?;
    let authors = if all {
        store.heads()?.into_iter().map(|(a, _)| a).collect()
    } else {
        let author = match author {
            Some(a) => a,
            None => load_identity(dir)?.author(),
        };
        if store.head(&author)?.is_none() {
            bail!("this node holds no entries of {author}; nothing to export");
        }
        vec![author]
    };
    let summary = archive::export(&store, &authors, output)
        .with_context(|| format!("cannot export to {}", output.display()))?;
    println!(
        "exported {} entries ({} with payloads) of {} authors to {} ({} bytes)",
        summary.entries,
        summary.payloads,
        summary.authors,
        output.display(),
        summary.bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn report_verified(summary: &Summary) {
    println!(
        "verified {} entries of {} authors ({} payloads)",
        summary.entries, summary.authors, summary.payloads
    );
}

fn verification_failed(e: VerifyError) -> Result<ExitCode> {
    match e {
        VerifyError::Entry(bad) => {
            println!("verification failed: {bad}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        VerifyError::Archive(e) if !matches!(e, archive::ArchiveError::Io(_)) => {
            println!("verification failed: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        other => Err(other.into()),
    }
}

fn verify_archive(file: &Path) -> Result<ExitCode> {
    match audit::verify_file(file, None) {
        Ok(summary) => {
            report_verified(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Archive(archive::ArchiveError::Io(e))) => {
            Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())))
        }
        Err(e) => verification_failed(e),
    }
}

fn verify_store(dir: &DataDir) -> Result<ExitCode> {
    let store = open_store(dir)?;
    match audit::verify_store(&store) {
        Ok(summary) => {
            let forks = store.forks()?;
            if let Some(proof) = forks.first() {
                println!(
                    "verification failed: entry {} of author {}: fork: entries {} and {} are both signed for this seq",
                    proof.first.seq(),
                    proof.first.author(),
                    proof.first.id(),
                    proof.second.id()
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            report_verified(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => verification_failed(e),
    }
}

fn import(dir: &DataDir, file: &Path) -> Result<ExitCode> {
    let store = open_store(dir)?;
    let (batches, incoming) = mpsc::sync_channel::<ImportMsg>(4);
    let (verified, stored) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| store.import(incoming));
        let mut send = |batch| {
            batches
                .send(ImportMsg::Batch(batch))
                .map_err(|_| VerifyError::Store(crate::store::StoreError::Closed))
        };
        let verified = audit::verify_file(file, Some(&mut send));
        if verified.is_ok() {
            let _ = batches.send(ImportMsg::Commit);
        }
        drop(batches);
        (
            verified,
            writer.join().expect("the import thread does not panic"),
        )
    });
    // A refusal by the store closes the stream under the verifier, so look at
    // the store's answer first: it says why.
    let report = stored?;
    if let Some(bad) = report.rejected {
        println!("nothing was imported: the archive conflicts with this node's store: {bad}");
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let summary = match verified {
        Ok(summary) => summary,
        Err(VerifyError::Archive(archive::ArchiveError::Io(e))) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())));
        }
        Err(e) => {
            println!("nothing was imported.");
            return verification_failed(e);
        }
    };
    println!(
        "imported {} new entries ({} already held) of {} authors",
        report.accepted, report.duplicates, summary.authors
    );
    for (author, seq) in &report.forks {
        println!("fork found: author {author} signed two entries for seq {seq}; the proof is kept");
    }
    if report.refused_forked > 0 {
        println!(
            "{} entries of forked logs were refused",
            report.refused_forked
        );
    }
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

fn mirror(dir: &DataDir, author: AuthorKey, add: bool) -> Result<ExitCode> {
    let socket = dir.root().join(admin::SOCKET_FILE);
    let request = admin::Request::Mirror {
        author: author.to_string(),
        add,
    };
    let changed = match admin::call(&socket, &request) {
        Some(answer) => match answer.context("the running node did not answer")? {
            admin::Answer::Changed(changed) => changed,
            admin::Answer::Error(e) => bail!("{e}"),
            other => bail!("unexpected answer from the node: {other:?}"),
        },
        None => {
            let store = open_store(dir)?;
            let changed = if add {
                store.mirror(author)?
            } else {
                store.unmirror(author)?
            };
            store.close()?;
            changed
        }
    };
    match (add, changed) {
        (true, true) => println!("now mirroring {author}; the next sync fetches its log"),
        (true, false) => println!("already mirroring {author}"),
        (false, true) => println!("no longer mirroring {author}; what this node holds of it stays"),
        (false, false) => println!("{author} was not mirrored"),
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn sync(dir: &DataDir, peer: PeerAddr, config: SyncConfig, as_json: bool) -> Result<ExitCode> {
    let identity = load_identity(dir)?;
    let store = Arc::new(open_store(dir)?);
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let addr = peer.resolve().await?;
        let bar = crate::progress::bar(1, "syncing");
        let report = network::sync_once(
            Arc::clone(&store),
            &identity,
            peer.key,
            addr,
            config,
            Some(bar),
        )
        .await
        .with_context(|| format!("sync with {peer} failed"))?;
        anyhow::Ok(report)
    })?;
    drop(runtime);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    let s = &report.stats;
    if as_json {
        let forks: Vec<_> = s
            .forks
            .iter()
            .map(|(a, seq)| json!({"author": a.to_string(), "seq": seq}))
            .collect();
        println!(
            "{}",
            json!({
                "peer": peer.to_string(),
                "seconds": report.elapsed.as_secs_f64(),
                "shared_authors": s.shared_authors,
                "by_cursor": s.by_cursor,
                "entries_received": s.entries_received,
                "entries_stored": s.entries_stored,
                "authors_updated": s.authors_updated,
                "entry_bytes_sent": report.entry_bytes_sent,
                "bytes_sent": report.bytes_sent,
                "bytes_received": report.bytes_received,
                "overhead": report.overhead(),
                "round_trips": s.round_trips,
                "forks": forks,
                "refused": s.refused,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "synced with {} in {:.2} s",
        peer,
        report.elapsed.as_secs_f64()
    );
    println!(
        "  shared authors: {} (heads settled {})",
        s.shared_authors,
        if s.by_cursor {
            "from the changelog cursors"
        } else {
            "by reconciliation"
        }
    );
    println!(
        "  received {} entries ({} new) for {} authors; sent {} bytes of entries",
        s.entries_received, s.entries_stored, s.authors_updated, report.entry_bytes_sent
    );
    println!(
        "  bytes: {} sent, {} received, {} of them besides entries and payloads",
        report.bytes_sent,
        report.bytes_received,
        report.overhead()
    );
    println!("  round trips: {}", s.round_trips);
    for (author, seq) in &s.forks {
        println!("  fork: {author} signed two entries for seq {seq}; the proof is kept");
    }
    if s.refused > 0 {
        println!(
            "  {} entries were refused (see `capsule verify --store`)",
            s.refused
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_sync(dir: &DataDir, listen: std::net::SocketAddr, config: SyncConfig) -> Result<ExitCode> {
    let identity = load_identity(dir)?;
    let store = Arc::new(open_store(dir)?);
    let runtime = runtime()?;
    runtime.block_on(async {
        let endpoint = transport::listen(&identity, listen)?;
        let local = endpoint.local_addr().context("the listening address")?;
        println!("listening for sync on {local} as {}", identity.author());
        println!("peers dial {}@HOST:{}", identity.author(), local.port());
        let on_session = Arc::new(|r: Result<network::Report, _>| match r {
            Ok(r) => eprintln!(
                "session with {}: received {} entries, sent {} bytes of entries, {:.2} s",
                r.peer.map(|p| p.to_string()).unwrap_or_default(),
                r.stats.entries_received,
                r.entry_bytes_sent,
                r.elapsed.as_secs_f64()
            ),
            Err(e) => eprintln!("session failed: {e}"),
        });
        let server = tokio::spawn(crate::mesh::listener::serve(
            endpoint.clone(),
            Arc::clone(&store),
            Some(identity.author()),
            config,
            on_session,
        ));
        crate::node::shutdown_signal().await;
        eprintln!("stopping");
        endpoint.close(transport::close::DONE.into(), b"shutting down");
        let _ = server.await;
        endpoint.wait_idle().await;
        anyhow::Ok(())
    })?;
    drop(runtime);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close()?;
    }
    Ok(ExitCode::SUCCESS)
}
