//! Reconciliation of log heads beside negentropy reconciling every entry id
//! of the same logs: round trips and bytes until the initiator knows the
//! difference. (negentropy is a dev-dependency, the anchor of the design.)

use capsule::sync::range::{Item, Mode, Reconciler, from_wire, to_wire};
use capsule::sync::wire::{self, Message};
use negentropy::{Id, Negentropy, NegentropyStorageVector};

const BASE: u64 = 1_764_000_000_000_000;

fn id(author: u64, seq: u64) -> [u8; 32] {
    *blake3::hash(&[author.to_le_bytes(), seq.to_le_bytes()].concat()).as_bytes()
}

/// Entry `seq` of `author`: authors post in turn, in an order unrelated to
/// their keys, so a log's head sits anywhere in the timestamp order, and
/// every newer entry sorts after every older one (new entries cluster at the
/// newest end, as in life).
fn ts(author: u64, seq: u64) -> u64 {
    BASE + seq * 1_000_000_000 + (author * 7919) % 1_000_003
}

/// Whether `author` is one of the `ahead` authors that posted once more:
/// spread evenly over the keys, so their old heads are scattered.
fn is_ahead(author: u64, authors: u64, ahead: u64) -> bool {
    ahead > 0 && author.is_multiple_of(authors / ahead) && author / (authors / ahead) < ahead
}

/// (round trips, bytes) for negentropy over all entry ids; the responder
/// holds one more entry of each of the first `ahead` authors.
fn negentropy_cost(authors: u64, per_author: u64, ahead: u64) -> (u64, u64) {
    let store = |extra: bool| {
        let mut s = NegentropyStorageVector::with_capacity((authors * (per_author + 1)) as usize);
        for a in 0..authors {
            let n = per_author + u64::from(extra && is_ahead(a, authors, ahead));
            for seq in 1..=n {
                s.insert(ts(a, seq), Id::from_byte_array(id(a, seq)))
                    .unwrap();
            }
        }
        s.seal().unwrap();
        s
    };
    let (client_store, relay_store) = (store(false), store(true));
    let mut client = Negentropy::borrowed(&client_store, 0).unwrap();
    let mut relay = Negentropy::borrowed(&relay_store, 0).unwrap();
    let mut msg = client.initiate().unwrap();
    let (mut rounds, mut bytes) = (0, msg.len() as u64);
    let (mut have, mut need) = (Vec::new(), Vec::new());
    loop {
        let answer = relay.reconcile(&msg).unwrap();
        bytes += answer.len() as u64;
        rounds += 1;
        match client
            .reconcile_with_ids(&answer, &mut have, &mut need)
            .unwrap()
        {
            Some(next) => {
                bytes += next.len() as u64;
                msg = next;
            }
            None => break,
        }
    }
    assert_eq!(need.len() as u64, ahead);
    (rounds, bytes)
}

/// (round trips, bytes) for reconciling heads (the ranges messages of the
/// protocol) until the initiator knows every differing head.
fn heads_cost(authors: u64, per_author: u64, ahead: u64) -> (u64, u64) {
    let items = |extra: bool| -> Vec<Item> {
        (0..authors)
            .map(|a| {
                let seq = per_author + u64::from(extra && is_ahead(a, authors, ahead));
                Item {
                    author: a as u32,
                    seq,
                    id: id(a, seq),
                }
            })
            .collect()
    };
    let a = Reconciler::new(items(false), authors as u32);
    let b = Reconciler::new(items(true), authors as u32);
    let frame = |r: &[(u32, Mode)]| wire::encode(&Message::Ranges(to_wire(r))).len() as u64;
    let mut message = a.initial().ranges;
    let (mut rounds, mut bytes, mut learned) = (0, frame(&message), 0);
    loop {
        let answer = b.answer(&from_wire(to_wire(&message)).unwrap()).unwrap();
        learned += answer.push.len() as u64;
        bytes += frame(&answer.ranges);
        rounds += 1;
        let back = a
            .answer(&from_wire(to_wire(&answer.ranges)).unwrap())
            .unwrap();
        // Newer heads the initiator learned (it asks for them); the others
        // the responder pushes, having answered the initiator's list.
        learned += back.learned.len() as u64;
        let settled = back.ranges.iter().all(|(_, m)| {
            matches!(
                m,
                Mode::Skip | Mode::Diff(_) | Mode::Forked { reply: false, .. }
            )
        });
        if settled {
            break;
        }
        bytes += frame(&back.ranges);
        message = back.ranges;
    }
    assert_eq!(learned, ahead, "every newer head is learned or pushed once");
    (rounds, bytes)
}

#[test]
fn heads_against_negentropy_one_new_entry_among_10_000_authors() {
    let (n_rounds, n_bytes) = negentropy_cost(10_000, 100, 1);
    let (h_rounds, h_bytes) = heads_cost(10_000, 100, 1);
    eprintln!(
        "1 new entry, 10,000 authors x 100: negentropy {n_rounds} round trips {n_bytes} bytes; heads {h_rounds} round trips {h_bytes} bytes"
    );
    assert!(h_rounds <= 2 && h_rounds <= n_rounds);
    assert!(h_bytes <= 1_500 && h_bytes <= n_bytes, "{h_bytes} bytes");
}

#[test]
fn heads_against_negentropy_1000_authors_one_entry_ahead() {
    let (n_rounds, n_bytes) = negentropy_cost(10_000, 10, 1000);
    let (h_rounds, h_bytes) = heads_cost(10_000, 10, 1000);
    eprintln!(
        "1,000 of 10,000 authors one entry ahead: negentropy {n_rounds} round trips {n_bytes} bytes; heads {h_rounds} round trips {h_bytes} bytes"
    );
    assert!(h_rounds <= 2 && h_rounds <= n_rounds);
    assert!(h_bytes <= 35_000, "{h_bytes} bytes");
}
