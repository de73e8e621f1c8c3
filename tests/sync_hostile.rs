//! Hostile peers: an honest node dials a peer that runs the real protocol
//! but tampers with what it sends. Every case ends with the honest node's
//! logs unchanged and still verifying, and the session ended promptly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule::identity::{AuthorKey, Identity};
use capsule::log::entry::{Draft, Entry, EntryId, SIGNED_LEN};
use capsule::sync::network::SyncConfig;
use capsule::sync::protocol::{Action, Role, Session, Stored};
use capsule::sync::session::{SessionError, serve, snapshot};
use capsule::sync::transport;
use capsule::sync::wire::{self, Message};

use crate::sync_protocol::{log, put};
use crate::sync_quic::{Node, blocking};

/// What the hostile peer writes instead of one honest message: raw bytes
/// (any number of frames), or nothing ever again.
enum Out {
    Bytes(Vec<u8>),
    Silence,
}

type Tamper = Box<dyn FnMut(Message) -> Out + Send>;

/// Listens once on loopback as `node`, answering with the real protocol
/// passed through `tamper`. Returns the address and a counter of bytes the
/// peer managed to write.
fn hostile(node: &Node, mut tamper: Tamper) -> (SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    let endpoint = transport::listen(&node.identity, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let store = Arc::clone(&node.store);
    let own = node.key();
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&written);
    tokio::spawn(async move {
        let connection = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = connection.accept_bi().await.unwrap();
        let peer = transport::peer_key(&connection).unwrap();
        let mut session = blocking(|| {
            let snap = snapshot(&store, Some(own)).unwrap();
            Session::new(
                Role::Responder,
                snap,
                store.peer(&peer.0).unwrap().map(Into::into),
            )
        });
        let mut silent = false;
        loop {
            let mut prefix = [0u8; 4];
            if recv.read_exact(&mut prefix).await.is_err() {
                break;
            }
            let mut body = vec![0u8; wire::check_len(prefix).unwrap()];
            if recv.read_exact(&mut body).await.is_err() {
                break;
            }
            let Ok(actions) = session.on_message(wire::decode(&body).unwrap()) else {
                break;
            };
            let mut queue: std::collections::VecDeque<Action> = actions.into();
            let mut outgoing = Vec::new();
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Send(m) => outgoing.push(m),
                    Action::Serve { author, from, to } => blocking(|| {
                        serve(&store, &[(author, from, to)], &mut |m| {
                            outgoing.push(m);
                            Ok(())
                        })
                        .unwrap();
                    }),
                    Action::Store(_) => queue.extend(session.on_stored(&Stored::nothing(1))),
                    Action::Done => outgoing.push(Message::Done { counter: None }),
                    Action::Finished | Action::KeepProofs(_) => {}
                }
            }
            for m in outgoing {
                if silent {
                    break;
                }
                match tamper(m) {
                    Out::Bytes(bytes) => {
                        if send.write_all(&bytes).await.is_err() {
                            return;
                        }
                        counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Out::Silence => silent = true,
                }
            }
        }
        // Hold the connection open without answering, so only the honest
        // side's own limits end the session.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    (addr, written)
}

fn honest(m: Message) -> Out {
    Out::Bytes(wire::encode(&m))
}

/// The honest node's logs, as far as anyone could tell.
fn state(node: &Node) -> (Vec<(AuthorKey, u64)>, u64) {
    blocking(|| {
        let heads = node
            .store
            .heads()
            .unwrap()
            .into_iter()
            .map(|(a, h)| (a, h.seq))
            .collect();
        (heads, node.store.change_counter().unwrap())
    })
}

/// An honest node holding 5 entries of `author`'s log and a hostile one
/// holding 20, both mirroring the author.
fn pair(author: &Identity) -> (Node, Node) {
    let honest_node = Node::new(1);
    let hostile_node = Node::new(2);
    let entries = log(author, 20, 0);
    blocking(|| {
        put(&honest_node.store, &entries[..5]);
        put(&hostile_node.store, &entries);
    });
    honest_node.mirror(author.author());
    hostile_node.mirror(author.author());
    (honest_node, hostile_node)
}

async fn attack(
    tamper: Tamper,
) -> (
    Result<capsule::sync::network::Report, SessionError>,
    Duration,
    u64,
) {
    let author = Identity::from_seed([40; 32]);
    let (honest_node, hostile_node) = pair(&author);
    let before = state(&honest_node);
    let (addr, written) = hostile(&hostile_node, tamper);
    let start = Instant::now();
    let result = honest_node
        .sync_with(
            &hostile_node,
            addr,
            SyncConfig {
                idle: Duration::from_secs(2),
            },
        )
        .await;
    let elapsed = start.elapsed();
    assert_eq!(state(&honest_node), before, "the honest store changed");
    blocking(|| capsule::archive::audit::verify_store(&honest_node.store).expect("still verifies"));
    let written = written.load(std::sync::atomic::Ordering::Relaxed);
    (result, elapsed, written)
}

fn tamper_entries(mut f: impl FnMut(&mut Vec<u8>) + Send + 'static) -> Tamper {
    Box::new(move |m| match m {
        Message::Entries(mut body) => {
            f(&mut body);
            honest(Message::Entries(body))
        }
        other => honest(other),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_signature_ends_the_session() {
    let (result, _, _) = attack(tamper_entries(|body| body[1 + SIGNED_LEN + 5] ^= 1)).await;
    match result {
        Err(SessionError::BadEntry(bad)) => {
            assert!(bad.to_string().contains("bad signature"), "{bad}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_backlink_is_refused() {
    let author = Identity::from_seed([40; 32]);
    // Entry 6, validly signed by the author, but chained to nothing.
    let forged = Entry::sign(
        author.signing_key(),
        Draft {
            seq: 6,
            timestamp_us: 5_000,
            backlink: EntryId([9; 32]),
            skiplink: EntryId([9; 32]),
        },
        b"forged",
    );
    let (result, _, _) = attack(tamper_entries(move |body| {
        let mut forged_body = Vec::new();
        wire::push_entry(&mut forged_body, &forged, Some(b"forged"));
        if body[1..1 + SIGNED_LEN] != forged_body[1..1 + SIGNED_LEN] {
            *body = forged_body;
        }
    }))
    .await;
    // The store refused it (nothing stored, see `attack`); the peer then
    // sent the rest of what it was asked for out of order, which ends the
    // session.
    match result {
        Err(SessionError::Violation(v)) => assert!(v.to_string().contains("not asked for"), "{v}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_claiming_4_gib_is_refused_before_allocating() {
    let (result, elapsed, _) = attack(Box::new(|m| match m {
        Message::Welcome { .. } => Out::Bytes(u32::MAX.to_be_bytes().to_vec()),
        other => honest(other),
    }))
    .await;
    assert!(
        matches!(
            result,
            Err(SessionError::Wire(wire::WireError::TooLarge(_)))
        ),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_ends_the_session() {
    let (result, _, _) = attack(Box::new(|m| match m {
        Message::Welcome { .. } => {
            let mut frame = 5u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&[0xff; 5]);
            Out::Bytes(frame)
        }
        other => honest(other),
    }))
    .await;
    assert!(
        matches!(
            result,
            Err(SessionError::Wire(wire::WireError::Undecodable(_)))
        ),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_stream_of_unrequested_entries_is_cut_off() {
    let author = Identity::from_seed([40; 32]);
    let entries = log(&author, 20, 0);
    // After the welcome, 1 MiB messages of valid entries nobody asked for,
    // 10,000 of them (10 GiB) unless the honest node stops reading.
    let (result, elapsed, written) = attack(Box::new(move |m| match m {
        Message::Welcome { .. } => {
            let mut bytes = wire::encode(&m);
            let mut body = Vec::new();
            while body.len() < wire::MAX_MESSAGE - 1024 {
                for (e, p) in &entries[5..] {
                    wire::push_entry(&mut body, e, p.as_deref());
                }
            }
            let frame = wire::encode(&Message::Entries(body));
            for _ in 0..10_000 {
                bytes.extend_from_slice(&frame);
                if bytes.len() > 64 * 1024 * 1024 {
                    break;
                }
            }
            Out::Bytes(bytes)
        }
        other => honest(other),
    }))
    .await;
    assert!(
        matches!(result, Err(SessionError::Violation(_))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(10));
    // The honest node stopped reading: the peer could not push its 64 MiB.
    assert!(written < 64 * 1024 * 1024, "{written} bytes went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_times_out() {
    let (result, elapsed, _) = attack(Box::new(|m| match m {
        Message::Entries(_) => Out::Silence,
        other => honest(other),
    }))
    .await;
    assert!(
        matches!(result, Err(SessionError::Timeout(2))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_served_by_a_peer_is_kept_as_proof() {
    let author = Identity::from_seed([41; 32]);
    let honest_node = Node::new(1);
    let hostile_node = Node::new(2);
    blocking(|| {
        put(&honest_node.store, &log(&author, 10, 0));
        put(&hostile_node.store, &log(&author, 10, 1));
    });
    honest_node.mirror(author.author());
    hostile_node.mirror(author.author());
    let (heads, _) = state(&honest_node);
    let (addr, _) = hostile(&hostile_node, Box::new(honest));
    let report = honest_node
        .sync_with(&hostile_node, addr, SyncConfig::default())
        .await
        .unwrap();
    assert_eq!(report.stats.forks, vec![(author.author(), 10)]);
    assert_eq!(state(&honest_node).0, heads, "the log itself is unchanged");
    let proofs = blocking(|| honest_node.store.forks().unwrap());
    assert_eq!(proofs.len(), 1);
    assert_ne!(proofs[0].first.id(), proofs[0].second.id());
}

/// A peer that lies about holding an author: it lists heads it does not
/// serve (every entries message dropped, every other message honest). The
/// session ends at the idle limit with nothing stored, and the honest store
/// still verifies; the next session goes to whoever does serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_claims_entries_it_does_not_serve_is_dropped() {
    let (result, elapsed, _) = attack(Box::new(|m| match m {
        Message::Entries(_) => Out::Bytes(Vec::new()),
        other => honest(other),
    }))
    .await;
    assert!(
        matches!(result, Err(SessionError::Timeout(2))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}
