//! What the writer thread is asked to do: one [`Request`] per write, each
//! with the channel its answer goes back on, and the messages of an import
//! stream. src/store/writer.rs serves them.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use super::StoreError;
use super::apply::AppendReport;
use super::blocks::BlockChange;
use super::changes::{AddressUpdate, InterestChange};
use super::signer::{SignerChange, Signing};
use super::tables::PeerRow;
use crate::identity::{AuthorKey, Identity};
use crate::log::entry::Entry;
use crate::log::verify::VerifiedEntry;

/// Where a request's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write request.
pub enum Request {
    /// Append verified entries.
    Append {
        /// The entries, in order.
        entries: Vec<VerifiedEntry>,
        /// Whether the commit must reach the disk before the reply. Entries
        /// mirrored from a peer need not: after a crash they are fetched again
        /// (the next durable commit, or [`Request::Flush`], makes them so).
        durable: bool,
        /// Where the report goes.
        reply: Reply<AppendReport>,
    },
    /// Sign and append the next entry of the node's own log.
    Publish {
        /// The signer.
        identity: Arc<Identity>,
        /// The payload to sign.
        payload: Vec<u8>,
        /// The bytes of the blobs the payload names, kept (durable) before
        /// the entry is signed, in the writer, so that a deletion's removal
        /// of an orphaned blob can never pass between the two.
        blobs: Vec<Vec<u8>>,
        /// The author's clock, in microseconds since the Unix epoch.
        timestamp_us: u64,
        /// The request's id, remembered with the entry's seq in the same
        /// transaction (see [`super::tables::POST_REQUESTS`]).
        request: Option<[u8; 16]>,
        /// Where the new entry goes.
        reply: Reply<Entry>,
    },
    /// Add an author to (or remove one from) the mirror set.
    Mirror {
        /// The author.
        author: AuthorKey,
        /// What to do.
        change: InterestChange,
        /// Whether the set or the author's reason changed.
        reply: Reply<bool>,
    },
    /// Change what the node knows of a peer's address.
    Address {
        /// The peer's node key.
        peer: [u8; 32],
        /// What to do.
        update: AddressUpdate,
        /// Done.
        reply: Reply<()>,
    },
    /// Remember what a sync session with a peer established: its
    /// checkpoint, and that it holds the shared logs the node cares about.
    SetPeer {
        /// The peer's node key.
        peer: [u8; 32],
        /// The row.
        row: PeerRow,
        /// The session's shared interest, sorted.
        shared: Vec<AuthorKey>,
        /// When the session ended.
        seen_us: u64,
        /// Done.
        reply: Reply<()>,
    },
    /// Keep fork proofs a peer handed over, verified.
    Proofs {
        /// The proofs.
        proofs: Vec<super::ForkProof>,
        /// The proofs newly kept, as forks found.
        reply: Reply<AppendReport>,
    },
    /// Change whether this store may sign an identity's next entry.
    Signer {
        /// The identity.
        author: AuthorKey,
        /// What to do.
        change: SignerChange,
        /// Where the identity stands after.
        reply: Reply<Signing>,
    },
    /// Block, mute, or lift either for an author.
    Block {
        /// The author.
        author: AuthorKey,
        /// What to do.
        change: BlockChange,
        /// Whether anything changed.
        reply: Reply<bool>,
    },
    /// Evict mirrored blobs to keep within the media budget (the owner's
    /// are never evicted).
    Evict {
        /// The blobs' hashes.
        hashes: Vec<[u8; 32]>,
        /// When, µs since the epoch.
        now_us: u64,
        /// How many were evicted.
        reply: Reply<u64>,
    },
    /// Make every earlier commit durable.
    Flush {
        /// Done.
        reply: Reply<()>,
    },
    /// Import a stream of batches, all or nothing.
    Import {
        /// The batches.
        batches: Receiver<ImportMsg>,
        /// Where the report goes.
        reply: Reply<AppendReport>,
    },
}

/// One message of an import stream.
pub enum ImportMsg {
    /// More verified entries.
    Batch(Vec<VerifiedEntry>),
    /// Everything was sent and verified: commit.
    Commit,
}
