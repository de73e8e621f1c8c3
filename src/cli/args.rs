//! The command line's words: every subcommand, flag and help text (clap).
//!
//! The doc comments here are `--help` texts, read on a terminal, where
//! `[::]:443` is an address and a URL is plain text: rustdoc's link checks
//! do not apply to them.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::identity::AuthorKey;
use crate::log::entry::EntryId;
use crate::mesh::address::PeerAddr;
use crate::sync::network::SyncConfig;

/// Capsule: your microblog as a signed, hash-chained log that your friends'
/// nodes mirror.
///
/// Start with `capsule up` (your node, on http://127.0.0.1:8080), or
/// `capsule init` then `capsule post "hello"`. Everything lives in
/// one data directory: --data-dir, else $CAPSULE_HOME, else
/// ~/.local/share/capsule.
///
/// Exit codes: 0 success, 1 error, 2 bad command line, 3 verification found
/// an invalid entry or a damaged store. A fork proof (an author who signed
/// two entries for one seq) is not damage: verification lists the forked
/// authors and exits 0.
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

impl Cli {
    /// Parses the process's arguments, pairing each `post --alt` with the
    /// `--attach` before it; exits with clap's message on an error.
    pub fn parse_paired() -> Cli {
        Self::try_parse_paired(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_paired`] of `args` (the first is the program's name).
    pub fn try_parse_paired<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Post { attach, alt, .. }, Some(("post", post))) =
            (&mut cli.command, matches.subcommand())
        {
            let positions = |id| {
                post.indices_of(id)
                    .map(Iterator::collect)
                    .unwrap_or_else(Vec::new)
            };
            let attached: Vec<usize> = positions("attach");
            let alts: Vec<usize> = positions("alt");
            let mut paired = vec![String::new(); attach.len()];
            for (text, at) in std::mem::take(alt).into_iter().zip(alts) {
                // The --attach just before this --alt.
                let Some(i) = attached.iter().rposition(|&a| a < at) else {
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--alt describes the picture attached before it: put it after an --attach FILE",
                    ));
                };
                if !paired[i].is_empty() {
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("two --alt for the picture {}", attach[i].display()),
                    ));
                }
                paired[i] = text;
            }
            *alt = paired;
        }
        Ok(cli)
    }
}

/// How `capsule up` serves. Each setting may also come from
/// `<data>/config.toml` (see [`crate::node::config`]); flags win.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where plain HTTP listens. Default: 127.0.0.1:8080, or [::]:80 (a
    /// redirect to HTTPS) with --domain.
    #[arg(long, env = "CAPSULE_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Where the sync listener listens (QUIC, UDP). Default:
    /// 127.0.0.1:4433, or [::]:4433 (every address, IPv6 and IPv4) with
    /// --domain, so that the peers told to dial DOMAIN:4433 reach it.
    #[arg(long, env = "CAPSULE_SYNC_LISTEN")]
    pub sync_listen: Option<std::net::SocketAddr>,
    /// Serve HTTPS for this domain, with a certificate from an ACME CA
    /// (TLS-ALPN-01 on the HTTPS port: it must be reachable as port 443).
    #[arg(long, env = "CAPSULE_DOMAIN")]
    pub domain: Option<String>,
    /// A contact address for the CA (expiry warnings and the like).
    #[arg(long, env = "CAPSULE_EMAIL")]
    pub email: Option<String>,
    /// The CA's ACME directory. Let's Encrypt's staging directory,
    /// https://acme-staging-v02.api.letsencrypt.org/directory, is good for a
    /// first try. Default: Let's Encrypt.
    #[arg(long, env = "CAPSULE_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Where HTTPS listens with --domain. Default: [::]:443.
    #[arg(long, env = "CAPSULE_HTTPS_LISTEN")]
    pub https_listen: Option<std::net::SocketAddr>,
    /// A root certificate (PEM) to trust for the ACME directory, besides
    /// the WebPKI roots: for a private or test CA.
    #[arg(long, value_name = "PEM", hide = true)]
    pub acme_root: Option<PathBuf>,
    /// The sync address other nodes are told (in /.well-known/capsule), as
    /// HOST:PORT, when it is not the one this node sees: behind a port
    /// forward, say. Default: the domain (or listen address) and the sync
    /// port.
    #[arg(long, value_name = "HOST:PORT", env = "CAPSULE_PUBLIC_SYNC")]
    pub public_sync: Option<String>,
    /// A root certificate (PEM) to trust, besides the WebPKI roots, when
    /// pulling peers' logs over HTTPS: for a private or test CA.
    #[arg(long, value_name = "PEM", hide = true)]
    pub ca_root: Option<PathBuf>,
    /// A peer to sync with, `KEY@HOST:PORT` (repeatable): the node starts
    /// from these and the nodes of the authors you follow.
    #[arg(long = "peer", value_name = "KEY@HOST:PORT")]
    pub peers: Vec<PeerAddr>,
    /// Seconds between sessions with each peer (±25 %; peers that fail are
    /// tried less and less often, at most hourly). Default: 60.
    #[arg(long, value_name = "SECONDS")]
    pub sync_interval: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (loopback addresses
    /// only), e.g. 127.0.0.1:9184.
    #[arg(long, value_name = "ADDR", env = "CAPSULE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How much disk the pictures of the people you follow may take, such
    /// as 2GiB (the default), 500MB or 0. Past it, the least recently
    /// viewed are dropped (their posts stay, and link to the picture at its
    /// origin); your own pictures are never dropped nor counted.
    #[arg(long, value_name = "SIZE", env = "CAPSULE_MEDIA_BUDGET")]
    pub media_budget: Option<String>,
    /// Your user name on the fediverse: people on Mastodon find and follow
    /// you as @NAME@DOMAIN. Letters, digits and _ only. Default: the
    /// domain's first label (alice for alice.example).
    #[arg(long, value_name = "NAME", env = "CAPSULE_HANDLE")]
    pub handle: Option<String>,
    /// Federate over plain http and with loopback addresses: for tests of
    /// several servers on one machine, never on a real server.
    #[arg(long, hide = true)]
    pub insecure_federation: bool,
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
    /// With --domain the node is also an account on the fediverse,
    /// @HANDLE@DOMAIN (see --handle): people on Mastodon search for it,
    /// follow it and answer your posts, and `capsule follow @bob@host`
    /// follows them back.
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
    ///
    /// `@bob@mastodon.example` follows someone on Mastodon or another
    /// fediverse server instead: the running node looks them up and asks;
    /// once they accept, their public posts show on your home.
    Follow {
        /// `alice.example` (looked up at https://alice.example/.well-known/capsule),
        /// `KEY@HOST:PORT`, `KEY`, or `@user@host` on the fediverse.
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
    /// stays, mirrored, until `capsule unmirror KEY`. `@user@host` stops
    /// following someone on the fediverse.
    Unfollow {
        /// The author key, or `@user@host`.
        author: String,
    },
    /// Publish your profile: the name and bio at the top of your timeline.
    Profile {
        /// Your display name.
        #[arg(long, default_value = "")]
        name: String,
        /// A line or two about you.
        #[arg(long, default_value = "")]
        bio: String,
        /// Your profile picture (JPEG, PNG, WebP or GIF): its centre square,
        /// 256 pixels wide, stripped of metadata. Without it, the current
        /// picture stays.
        #[arg(long, value_name = "FILE")]
        avatar: Option<PathBuf>,
    },
    /// Publish a post, or a reply with --reply-to, with up to 4 pictures.
    ///
    /// Each picture (JPEG, PNG, WebP or GIF, up to 16 MiB) is turned upright,
    /// scaled down to 3840 × 2160 in area if larger, and stripped of its
    /// metadata (EXIF, GPS position included) before it is signed.
    ///
    /// Example: capsule post "the harbour at dawn" --attach dawn.jpg --alt "boats on still water"
    Post {
        /// The text of the post (may be empty with pictures).
        #[arg(default_value = "")]
        text: String,
        /// Reply to this entry (its 64-hex-digit id, from `capsule log`).
        #[arg(long, value_name = "ENTRY_ID", env = "CAPSULE_REPLY_TO")]
        reply_to: Option<EntryId>,
        /// Attach a picture; repeat for more (at most 4).
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// What the picture attached just before shows, for those who cannot
        /// see it (up to 1,500 characters).
        #[arg(long, value_name = "TEXT")]
        alt: Vec<String>,
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
        /// offline: whoever has it can post as you. To restore it:
        /// `capsule restore FILE --from KEY@HOST:PORT` (a follower's node).
        /// Never copy it into a data directory by hand and post: that node
        /// does not hold your log, and would fork it.
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
    /// Block an author: your node stops mirroring and serving their log (web
    /// pages, API and sync), refuses their entries from peers, and hides
    /// their replies on your pages. What it holds of them stays, unserved,
    /// until `capsule unblock`. Works while the node runs.
    Block {
        /// The author's key.
        author: AuthorKey,
    },
    /// Lift a block.
    Unblock {
        /// The author's key.
        author: AuthorKey,
    },
    /// Mute an author: left out of your home timeline, nothing else.
    Mute {
        /// The author's key.
        author: AuthorKey,
    },
    /// Lift a mute.
    Unmute {
        /// The author's key.
        author: AuthorKey,
    },
    /// Bring your log back after losing your data directory (or copying
    /// identity.key by hand): puts the key backup in place, fetches your own
    /// log from peers that mirror it (a follower's node) or from an export,
    /// verifies it, and leaves a node that posts at the head + 1, so your
    /// log never forks.
    ///
    /// Until this has run, a node whose store does not hold its key's log
    /// refuses to sign. Examples:
    ///
    ///   capsule restore backup.key --from KEY@bob.example:4433
    ///
    ///   capsule restore backup.key --archive alice.capsule
    ///
    /// Without KEYFILE it works on the data directory's identity.key: after
    /// a copy of this node signed elsewhere, stop that copy, then run it here.
    Restore {
        /// Your key backup (from `capsule export --identity`).
        keyfile: Option<PathBuf>,
        /// A peer holding your log, KEY@HOST:PORT (repeatable): the node
        /// signs again at the newest head any of them holds.
        #[arg(long = "from", value_name = "KEY@HOST:PORT")]
        from: Vec<PeerAddr>,
        /// An export of your log (`capsule export -o FILE`).
        #[arg(long, value_name = "FILE")]
        archive: Option<PathBuf>,
        /// Declare that this key's log really is new (nobody holds an
        /// entry of it). If anyone does, your next post forks your log and
        /// every node that sees both refuses your log from then on.
        #[arg(long, conflicts_with_all = ["from", "archive"])]
        new_log: bool,
        /// With --new-log, do not ask for confirmation.
        #[arg(long, requires = "new_log")]
        yes: bool,
        /// Seconds to wait for each peer.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
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
    /// Listen for sync sessions from peers until interrupted (Ctrl-C),
    /// without the web gateway or the mesh. `post`, `status`, `log` and the
    /// other commands reach the store through it while it runs.
    ServeSync {
        /// The UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4433", env = "CAPSULE_SYNC_LISTEN")]
        listen: std::net::SocketAddr,
        /// Session limits.
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Check what can go wrong on a real server, one line each (ok, warning
    /// or failing, and what to do): the key backup, the store's integrity,
    /// free disk, the domain's DNS records, the certificate, who holds your
    /// log, and, while the node runs, whether peers reach its sync port and
    /// HTTPS port from outside (they dial back) and how far its clock is
    /// from theirs. Asks the running node, else looks at the data
    /// directory. Exits 1 when a check fails.
    Doctor {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the node as a system service (systemd).
    #[command(subcommand)]
    Service(Service),
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
    /// The session settings these flags give.
    pub fn config(&self) -> SyncConfig {
        SyncConfig {
            idle: std::time::Duration::from_secs(self.timeout.max(1)),
        }
    }
}

/// `capsule service`.
#[derive(Debug, Subcommand)]
pub enum Service {
    /// Write a systemd unit that runs `capsule up` at boot as a user of its
    /// own (made if missing), allowed to write the data directory and
    /// nothing else, binding ports 80 and 443 without root, restarted when
    /// it fails; then print how to enable it. The data directory is
    /// /var/lib/capsule unless --data-dir says otherwise; settings go in its
    /// config.toml. The binary must be outside home directories (the unit
    /// protects them): `cargo install --path . --root /usr/local` first.
    ///
    ///   sudo /usr/local/bin/capsule service install
    ///   sudo systemctl daemon-reload && sudo systemctl enable --now capsule
    #[command(verbatim_doc_comment)]
    Install {
        /// The user the node runs as.
        #[arg(long, default_value = "capsule")]
        user: String,
        /// Write the unit here instead of /etc/systemd/system, and make no
        /// user or directory (for a package or a look before installing).
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
        /// The capsule binary the unit runs. Default: this one.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Write over an existing unit.
        #[arg(long)]
        force: bool,
    },
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
        /// Also sync through a relay on loopback that adds this round-trip
        /// time (half each way), beside the direct run: e.g. 50 for a link
        /// across a continent.
        #[arg(long, value_name = "MS")]
        rtt_ms: Option<f64>,
        /// With --rtt-ms: the share of datagrams the relay drops each way
        /// (0.01 is 1 %), measured beside a loss-free run at the same
        /// round-trip time, and printed as their ratio.
        #[arg(long, value_name = "P", default_value_t = 0.0)]
        loss: f64,
        /// Seed of the relay's drops: the same seed, the same drops.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The congestion controller of both nodes: bbr, cubic or newreno.
        /// Default: the one every node uses (see `sync/transport.rs`).
        #[arg(long, value_parser = crate::sync::transport::Congestion::parse)]
        congestion: Option<crate::sync::transport::Congestion>,
        /// Posts with a picture each mirrored between two running nodes
        /// (the media case); 0 leaves it out.
        #[arg(long, default_value_t = 1_000)]
        media_posts: u64,
        /// Kilobytes of each of those pictures.
        #[arg(long, default_value_t = 200)]
        media_kb: u64,
        /// Posts of a 1 MB picture timed from their acknowledgement on one
        /// node to the picture being served by the other.
        #[arg(long, default_value_t = 20)]
        media_samples: usize,
    },
    /// One post delivered to fediverse followers: each delivery signed
    /// (RSA-2048) and POSTed to a sink server on 127.0.0.1 that checks the
    /// signature; signed deliveries per second beside the machine's RSA
    /// signing rate, the time to the last delivery, and posting latency
    /// while the queue drains.
    Fanout {
        /// Followers.
        #[arg(long, default_value_t = 1_000)]
        followers: u64,
        /// Servers with a shared inbox among them (one delivery each).
        #[arg(long, default_value_t = 100)]
        servers: u64,
        /// Followers on those servers; the rest have personal inboxes.
        #[arg(long, default_value_t = 500)]
        on_servers: u64,
        /// Posts timed idle and while the queue drains.
        #[arg(long, default_value_t = 20)]
        samples: usize,
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
