//! Peer exchange on live connections: "where do these authors' logs come
//! from?" (at most [`MAX_ASKED`] keys) answered with at most [`MAX_TOLD`]
//! `KEY@HOST:PORT` addresses that answered us, the asked authors' own
//! nodes first. A stream of this kind starts with [`STREAM_PEERS`]; each
//! side writes one frame (u32 BE length, postcard body) and finishes.
//! schema/sync.md documents the bytes.

use std::sync::Arc;

use super::address::PeerAddr;
use crate::identity::AuthorKey;
use crate::store::tables::{AddressRow, AddressSource};
use crate::store::{AddressUpdate, Store, StoreError};
use crate::sync::transport::{FrameError, read_frame, write_frame};

/// First byte of a bidirectional stream on a live connection: a peer
/// exchange follows.
pub const STREAM_PEERS: u8 = 2;

/// Authors one peer-exchange question may name: the followed authors of
/// a node that follows many, in one small frame.
pub const MAX_ASKED: usize = 256;

/// Addresses one peer-exchange answer may carry: enough to find every
/// asked author's node and a few more, little enough that a lying peer
/// costs a bounded number of failed dials.
pub const MAX_TOLD: usize = 32;

/// Addresses a node keeps; beyond it, exchanged ones are not learned.
pub const MAX_ADDRESSES: usize = 1024;

/// Largest peer-exchange frame: 256 keys, or 32 addresses of ≤ 52 + 1 +
/// 255 bytes, with their length prefixes.
pub const MAX_EXCHANGE_FRAME: usize = 16 * 1024;

/// Why a peer exchange failed. Either side just drops the exchange: the
/// live connection and its sessions go on.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The frame could not be read, or is over [`MAX_EXCHANGE_FRAME`].
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended before a frame.
    #[error("the peer ended the exchange without a frame")]
    Ended,
    /// The frame is not a question or answer of the right size.
    #[error("a malformed peer-exchange {0}")]
    Malformed(&'static str),
    /// Writing to the peer failed.
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    /// The stream was already closed.
    #[error(transparent)]
    Closed(#[from] quinn::ClosedStream),
    /// The connection failed.
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task of the exchange did not finish.
    #[error("the exchange's store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Decodes a peer-exchange question: postcard `Vec<[u8; 32]>`, at most
/// [`MAX_ASKED`] keys, nothing after.
pub fn decode_question(body: &[u8]) -> Result<Vec<[u8; 32]>, ExchangeError> {
    match postcard::take_from_bytes::<Vec<[u8; 32]>>(body) {
        Ok((keys, rest)) if rest.is_empty() && keys.len() <= MAX_ASKED => Ok(keys),
        _ => Err(ExchangeError::Malformed("question")),
    }
}

/// Decodes a peer-exchange answer: postcard `Vec<String>` of
/// `KEY@HOST:PORT`, at most [`MAX_TOLD`], nothing after; unparsable
/// addresses are dropped.
pub fn decode_answer(body: &[u8]) -> Result<Vec<PeerAddr>, ExchangeError> {
    match postcard::take_from_bytes::<Vec<String>>(body) {
        Ok((told, rest)) if rest.is_empty() && told.len() <= MAX_TOLD => {
            Ok(told.iter().filter_map(|t| t.parse().ok()).collect())
        }
        _ => Err(ExchangeError::Malformed("answer")),
    }
}

/// What to tell a peer that asked about `asked`: the address of each asked
/// author's own node if this node reached it last time, then other peers
/// that answered, never `own`, at most [`MAX_TOLD`] in all.
pub fn answer(
    book: &[(AuthorKey, AddressRow)],
    asked: &[[u8; 32]],
    own: Option<AuthorKey>,
) -> Vec<String> {
    let good = |row: &AddressRow| row.failures == 0 && row.last_success_us > 0;
    let mut told: Vec<String> = Vec::new();
    for key in asked {
        if let Some((k, row)) = book.iter().find(|(k, _)| k.0 == *key)
            && good(row)
        {
            told.push(format!("{k}@{}", row.host_port));
        }
    }
    for (k, row) in book {
        if told.len() >= MAX_TOLD {
            break;
        }
        let text = format!("{k}@{}", row.host_port);
        if good(row) && Some(*k) != own && !told.contains(&text) {
            told.push(text);
        }
    }
    told.truncate(MAX_TOLD);
    told
}

/// Which told addresses to learn: those of nodes not yet in the book and
/// not `us`, while the book stays within [`MAX_ADDRESSES`].
pub fn to_learn(
    book: &[(AuthorKey, AddressRow)],
    told: Vec<PeerAddr>,
    us: AuthorKey,
) -> Vec<PeerAddr> {
    let room = MAX_ADDRESSES.saturating_sub(book.len());
    told.into_iter()
        .filter(|peer| peer.key != us && !book.iter().any(|(k, _)| *k == peer.key))
        .take(room)
        .collect()
}

async fn read_one(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, ExchangeError> {
    read_frame(recv, MAX_EXCHANGE_FRAME)
        .await?
        .ok_or(ExchangeError::Ended)
}

/// Answers a question on a stream the peer opened with [`STREAM_PEERS`]
/// (the kind byte already read).
pub async fn answer_peers(
    store: &Arc<Store>,
    own: Option<AuthorKey>,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<(), ExchangeError> {
    let asked = decode_question(&read_one(recv).await?)?;
    let reader = Arc::clone(store);
    let book = tokio::task::spawn_blocking(move || reader.addresses()).await??;
    let told = answer(&book, &asked, own);
    let body = postcard::to_allocvec(&told).expect("a list of strings always encodes");
    write_frame(send, &body).await?;
    send.finish()?;
    Ok(())
}

/// Asks the peer where the followed authors' logs come from and learns
/// the addresses it tells; how many were new.
pub async fn ask_peers(
    connection: &quinn::Connection,
    store: &Arc<Store>,
    us: AuthorKey,
) -> Result<usize, ExchangeError> {
    let reader = Arc::clone(store);
    let asked: Vec<[u8; 32]> = tokio::task::spawn_blocking(move || reader.followed())
        .await??
        .into_iter()
        .take(MAX_ASKED)
        .map(|a| a.0)
        .collect();
    if asked.is_empty() {
        return Ok(0);
    }
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[STREAM_PEERS]).await?;
    let body = postcard::to_allocvec(&asked).expect("a list of keys always encodes");
    write_frame(&mut send, &body).await?;
    send.finish()?;
    let told = decode_answer(&read_one(&mut recv).await?)?;
    let writer = Arc::clone(store);
    tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
        let learn = to_learn(&writer.addresses()?, told, us);
        let learned = learn.len();
        for peer in learn {
            writer.update_address(
                peer.key,
                AddressUpdate::Learn {
                    host_port: peer.host_port,
                    web: None,
                    source: AddressSource::Exchange,
                },
            )?;
        }
        Ok(learned)
    })
    .await?
    .map_err(ExchangeError::from)
}
