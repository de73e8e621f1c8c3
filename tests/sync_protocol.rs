//! The sync protocol between two in-memory stores, without any network:
//! after a session both hold the union of what they share, nothing is sent
//! twice, forks are found, and the round trips stay within the design's
//! bound.

use capsule::identity::{AuthorKey, Identity};
use capsule::log::builder::LogBuilder;
use capsule::log::record::Record;
use capsule::log::verify::{Unverified, verify_batch};
use capsule::store::Store;
use capsule::sync::range::{ITEM_THRESHOLD, SPLIT};
use capsule::sync::session::{Lockstep, run_lockstep};
use proptest::prelude::*;

const NODE_A: [u8; 32] = [0xa; 32];
const NODE_B: [u8; 32] = [0xb; 32];

/// A log of `n` posts; `variant` changes the posts' text, so two variants
/// of one author are a fork from seq 1.
pub fn log(identity: &Identity, n: u64, variant: u8) -> Vec<Unverified> {
    let mut builder = LogBuilder::new(identity);
    (1..=n)
        .map(|seq| {
            let payload = Record::post(format!("post {seq} v{variant}"))
                .encode()
                .unwrap();
            (builder.next(1_000 + seq * 7, &payload), Some(payload))
        })
        .collect()
}

/// Stores `entries` as a node that made or imported them would.
pub fn put(store: &Store, entries: &[Unverified]) {
    if entries.is_empty() {
        return;
    }
    let report = store
        .append(verify_batch(entries.to_vec()).unwrap())
        .unwrap();
    assert!(report.rejected.is_none(), "{report:?}");
}

fn seqs(store: &Store, author: &AuthorKey) -> u64 {
    store.head(author).unwrap().map_or(0, |h| h.seq)
}

fn sync(a: &Store, b: &Store) -> Lockstep {
    run_lockstep((a, None, NODE_A), (b, None, NODE_B)).expect("the session succeeds")
}

/// Round trips until the initiator knows every differing head, at worst.
/// A split divides only the splitter's items in a range by SPLIT, so each
/// side may need `levels` splits of its own, taking turns (one round trip per
/// pair), until a range holds at most ITEM_THRESHOLD items; then a list and
/// its reply take one more, and the first split may wait for the welcome.
/// (Typical sessions need far fewer: see `capsule bench sync`.)
fn reconcile_bound(items: usize) -> u64 {
    let mut levels = 0;
    let mut n = items.max(1);
    while n > ITEM_THRESHOLD {
        n = n.div_ceil(SPLIT);
        levels += 1;
    }
    levels + 2
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_session_leaves_both_with_the_union(
        logs in prop::collection::vec((0u64..30, 0u64..=100, 0u64..=100), 1..7),
        a_mirrors_all in any::<bool>(),
    ) {
        let a = Store::open_in_memory().unwrap();
        let b = Store::open_in_memory().unwrap();
        let mut expected = Vec::new();
        let mut differing = 0;
        for (i, (len, pa, pb)) in logs.iter().enumerate() {
            let identity = Identity::from_seed([i as u8 + 1; 32]);
            let entries = log(&identity, *len, 0);
            let (ha, hb) = (len * pa / 100, len * pb / 100);
            put(&a, &entries[..ha as usize]);
            put(&b, &entries[..hb as usize]);
            let author = identity.author();
            // b always mirrors everything; a mirrors all but author 0 unless told.
            b.mirror(author).unwrap();
            let shared = a_mirrors_all || i > 0;
            if shared {
                a.mirror(author).unwrap();
                differing += ha.abs_diff(hb);
            }
            expected.push((author, shared, ha, hb));
        }
        let run = sync(&a, &b);
        for (author, shared, ha, hb) in &expected {
            let (want_a, want_b) = if *shared { (*ha.max(hb), *ha.max(hb)) } else { (*ha, *hb) };
            prop_assert_eq!(seqs(&a, author), want_a);
            prop_assert_eq!(seqs(&b, author), want_b);
        }
        // Nothing sent twice: exactly the missing entries crossed.
        prop_assert_eq!(run.initiator.entries_received + run.responder.entries_received, differing);
        prop_assert!(run.reconcile_round_trips <= reconcile_bound(logs.len()));
        // Then one more round trip fetches what was missing, one says done.
        prop_assert!(run.initiator.round_trips <= run.reconcile_round_trips + 2, "{:?}", run.initiator);
        prop_assert!(capsule::archive::audit::verify_store(&a).is_ok());
        prop_assert!(capsule::archive::audit::verify_store(&b).is_ok());

        // A returning peer settles the heads by changelog cursors: in one
        // round trip when both want the same authors, two when the responder
        // must first see the initiator's list again.
        let again = sync(&a, &b);
        prop_assert!(again.initiator.by_cursor);
        prop_assert_eq!(again.initiator.entries_received + again.responder.entries_received, 0);
        prop_assert_eq!(again.reconcile_round_trips, if a_mirrors_all { 1 } else { 2 });
    }

    #[test]
    fn a_fork_is_found_and_kept_as_proof(len_a in 1u64..20, len_b in 1u64..20) {
        let a = Store::open_in_memory().unwrap();
        let b = Store::open_in_memory().unwrap();
        let identity = Identity::from_seed([9; 32]);
        put(&a, &log(&identity, len_a, 1));
        put(&b, &log(&identity, len_b, 2));
        a.mirror(identity.author()).unwrap();
        b.mirror(identity.author()).unwrap();
        let run = sync(&a, &b);
        let found = run.initiator.forks.len() + run.responder.forks.len();
        prop_assert!(found >= 1, "{run:?}");
        // The side behind (or both, at equal length) holds the proof.
        let holders = [&a, &b].iter().filter(|s| !s.forks().unwrap().is_empty()).count();
        prop_assert!(holders >= 1);
        if len_a == len_b {
            prop_assert_eq!(holders, 2);
        }
    }
}

/// The author's true log (`variant` 0) and the forger's branch: the same
/// entries before seq `diverge`, other posts from it on.
fn branch(identity: &Identity, n: u64, diverge: u64, variant: u8) -> Vec<Unverified> {
    let mut builder = LogBuilder::new(identity);
    (1..=n)
        .map(|seq| {
            let v = if seq < diverge { 0 } else { variant };
            let payload = Record::post(format!("post {seq} v{v}")).encode().unwrap();
            (builder.next(1_000 + seq * 7, &payload), Some(payload))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Honest nodes that mirror one author, one of them holding the true
    /// log and one or more relays the forger's branch (shorter, longer or
    /// as long, from any seq), meet over a random connected graph in any
    /// order: every one of them ends holding the proof, those with the
    /// true, longer log too, though they never ask for the shorter branch.
    #[test]
    fn a_fork_proof_reaches_every_node_that_shares_the_author(
        nodes in 3usize..7,
        true_len in 1u64..6,
        forged_len in 1u64..6,
        diverge_at in any::<prop::sample::Index>(),
        relays in prop::collection::vec(any::<prop::sample::Index>(), 1..3),
        tree in prop::collection::vec(any::<prop::sample::Index>(), 6),
        extra in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..4),
        orders in prop::collection::vec(any::<prop::sample::Index>(), 64),
    ) {
        let author = Identity::from_seed([0x77; 32]);
        let diverge = 1 + diverge_at.index(true_len.min(forged_len) as usize) as u64;
        let honest = branch(&author, true_len, diverge, 0);
        let forged = branch(&author, forged_len, diverge, 1);
        let stores: Vec<Store> = (0..nodes).map(|_| Store::open_in_memory().unwrap()).collect();
        for s in &stores {
            s.mirror(author.author()).unwrap();
        }
        put(&stores[0], &honest);
        for r in &relays {
            let r = 1 + r.index(nodes - 1);
            if seqs(&stores[r], &author.author()) == 0 {
                put(&stores[r], &forged);
            }
        }
        // A random spanning tree, plus a few more links.
        let mut edges: Vec<(usize, usize)> =
            (1..nodes).map(|i| (tree[i - 1].index(i), i)).collect();
        for (a, b) in &extra {
            let (a, b) = (a.index(nodes), b.index(nodes));
            if a != b {
                edges.push((a, b));
            }
        }
        let node_key = |i: usize| [i as u8 + 1; 32];
        // Rounds of every link, in an order drawn afresh each round; as
        // many rounds as the graph can be wide, and one more.
        for round in 0..=nodes {
            let mut order = edges.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, orders[(round * 7 + i) % orders.len()].index(i + 1));
            }
            for (a, b) in order {
                let (a, b) = if round % 2 == 0 { (a, b) } else { (b, a) };
                run_lockstep(
                    (&stores[a], None, node_key(a)),
                    (&stores[b], None, node_key(b)),
                )
                .expect("honest sessions succeed");
            }
        }
        for (i, s) in stores.iter().enumerate() {
            let proof = s.fork_of(&author.author()).unwrap();
            prop_assert!(proof.is_some(), "node {} of {} ended without the proof", i, nodes);
            let proof = proof.unwrap();
            prop_assert_eq!(proof.first.seq(), proof.second.seq());
            prop_assert!(proof.first.id() != proof.second.id());
        }
    }
}

#[test]
fn a_proof_that_does_not_hold_ends_the_session_and_is_not_kept() {
    use capsule::sync::protocol::{Action, Role, Session, Snapshot};
    use capsule::sync::wire::{Message, PROOFS_FORMAT};
    let author = Identity::from_seed([0x78; 32]);
    let entries = log(&author, 2, 0);
    let other = log(&author, 2, 1);
    let snapshot = Snapshot {
        store: [1; 16],
        counter: 0,
        wanted: vec![author.author()],
        heads: Default::default(),
        proofs: Vec::new(),
    };
    // The responder of a version-2 hello, interest settled.
    let hello = |s: &mut Session| {
        s.on_message(Message::Hello {
            version: capsule::sync::wire::PROTOCOL_VERSION,
            interest: capsule::sync::protocol::interest_digest(&[author.author()]),
            interest_len: 1,
            store: capsule::sync::wire::Cursor {
                store: [2; 16],
                counter: 0,
            },
            cursor: None,
            optimistic: false,
        })
        .unwrap()
    };
    let proof =
        |a: &Unverified, b: &Unverified| [a.0.as_bytes().as_slice(), b.0.as_bytes()].concat();
    // A real proof is handed to the driver to check and keep.
    let mut s = Session::new(Role::Responder, snapshot.clone(), None);
    hello(&mut s);
    let actions = s
        .on_message(Message::Proofs {
            format: PROOFS_FORMAT,
            proofs: vec![proof(&entries[1], &other[1])],
        })
        .unwrap();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::KeepProofs(p) if p.len() == 1))
    );
    // Malformed ones end the session: wrong length, two of one author, a
    // second proofs message.
    let mut s = Session::new(Role::Responder, snapshot.clone(), None);
    hello(&mut s);
    assert!(
        s.on_message(Message::Proofs {
            format: PROOFS_FORMAT,
            proofs: vec![vec![0; 100]]
        })
        .is_err()
    );
    let mut s = Session::new(Role::Responder, snapshot.clone(), None);
    hello(&mut s);
    assert!(
        s.on_message(Message::Proofs {
            format: PROOFS_FORMAT,
            proofs: vec![proof(&entries[1], &other[1]), proof(&entries[0], &other[0])],
        })
        .is_err()
    );
    // A pair that is no fork (the same entry twice, or two seqs) is refused
    // by the store's check, and nothing is kept.
    let store = Store::open_in_memory().unwrap();
    let same = capsule::store::ForkProof {
        first: entries[1].0,
        second: entries[1].0,
    };
    assert!(store.keep_proofs(vec![same]).is_err());
    let seqs_differ = capsule::store::ForkProof {
        first: entries[0].0,
        second: other[1].0,
    };
    assert!(store.keep_proofs(vec![seqs_differ]).is_err());
    assert!(store.forks().unwrap().is_empty());
    let good = capsule::store::ForkProof {
        first: entries[1].0,
        second: other[1].0,
    };
    assert_eq!(store.keep_proofs(vec![good]).unwrap().forks.len(), 1);
}

#[test]
fn new_entries_after_a_session_travel_by_cursor() {
    let a = Store::open_in_memory().unwrap();
    let b = Store::open_in_memory().unwrap();
    let alice = Identity::from_seed([1; 32]);
    let bob = Identity::from_seed([2; 32]);
    let entries = log(&alice, 10, 0);
    put(&b, &entries[..8]);
    put(&a, &log(&bob, 3, 0));
    for s in [&a, &b] {
        s.mirror(alice.author()).unwrap();
        s.mirror(bob.author()).unwrap();
    }
    let first = sync(&a, &b);
    assert!(!first.initiator.by_cursor);
    assert_eq!(seqs(&a, &alice.author()), 8);
    assert_eq!(seqs(&b, &bob.author()), 3);
    // b gets two more of alice's entries; a returns.
    put(&b, &entries[8..]);
    let second = sync(&a, &b);
    assert!(second.initiator.by_cursor);
    assert_eq!(second.initiator.entries_received, 2);
    assert_eq!(second.reconcile_round_trips, 1);
    assert_eq!(seqs(&a, &alice.author()), 10);
    // A cursor into a store that was replaced is not honoured: full
    // reconciliation, and still the right answer.
    let c = Store::open_in_memory().unwrap();
    c.mirror(alice.author()).unwrap();
    c.mirror(bob.author()).unwrap();
    put(&c, &entries[..5]);
    let third = run_lockstep((&a, None, NODE_A), (&c, None, NODE_B)).unwrap();
    assert!(!third.initiator.by_cursor);
    assert_eq!(seqs(&c, &alice.author()), 10);
    assert_eq!(seqs(&c, &bob.author()), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Enough authors that reconciliation splits ranges, with differences
    /// scattered or clustered at the newest end.
    #[test]
    fn many_authors_reconcile_within_the_bound(
        authors in 49usize..1200,
        behind in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        a_is_behind in any::<bool>(),
    ) {
        let a = Store::open_in_memory().unwrap();
        let b = Store::open_in_memory().unwrap();
        let behind: std::collections::BTreeSet<usize> =
            behind.iter().map(|i| i.index(authors)).collect();
        let mut keys = Vec::new();
        for i in 0..authors {
            let identity = Identity::from_seed(blake3::hash(&(i as u64).to_le_bytes()).into());
            let entries = log(&identity, 2, 0);
            let (full, short) = if a_is_behind { (&b, &a) } else { (&a, &b) };
            put(full, &entries);
            put(short, &entries[..if behind.contains(&i) { 1 } else { 2 }]);
            a.mirror(identity.author()).unwrap();
            b.mirror(identity.author()).unwrap();
            keys.push(identity.author());
        }
        let run = sync(&a, &b);
        for k in &keys {
            prop_assert_eq!(seqs(&a, k), 2);
            prop_assert_eq!(seqs(&b, k), 2);
        }
        prop_assert_eq!(run.initiator.entries_received + run.responder.entries_received, behind.len() as u64);
        prop_assert!(run.reconcile_round_trips <= reconcile_bound(authors), "{run:?}");
        prop_assert!(run.initiator.round_trips <= run.reconcile_round_trips + 2, "{run:?}");
    }
}

fn arb_message() -> impl Strategy<Value = capsule::sync::wire::Message> {
    use capsule::sync::range::{ItemRef, Listed, Mode, WireRange};
    use capsule::sync::wire::{Cursor, Message, Shared};
    let cursor =
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(store, counter)| Cursor { store, counter });
    let item = (any::<u32>(), any::<u64>(), any::<[u8; 8]>())
        .prop_map(|(author, seq, id)| ItemRef { author, seq, id });
    let mode = prop_oneof![
        Just(Mode::Skip),
        any::<[u8; 16]>().prop_map(Mode::Fingerprint),
        (
            any::<[u8; 16]>(),
            prop::collection::vec(
                (any::<u32>(), any::<u64>()).prop_map(|(gap, seq)| Listed { gap, seq }),
                0..5
            )
        )
            .prop_map(|(fingerprint, items)| Mode::List { fingerprint, items }),
        prop::collection::vec(
            (any::<u32>(), any::<u64>()).prop_map(|(gap, seq)| Listed { gap, seq }),
            0..5
        )
        .prop_map(Mode::Diff),
        (any::<bool>(), prop::collection::vec(item.clone(), 0..5))
            .prop_map(|(reply, items)| Mode::Forked { reply, items }),
    ];
    let range = (any::<u32>(), mode).prop_map(|(delta, mode)| WireRange { delta, mode });
    prop_oneof![
        (
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u32>(),
            cursor.clone(),
            prop::option::of(cursor.clone()),
            any::<bool>()
        )
            .prop_map(
                |(version, interest, interest_len, store, cursor, optimistic)| Message::Hello {
                    version,
                    interest,
                    interest_len,
                    store,
                    cursor,
                    optimistic
                }
            ),
        (
            prop::collection::vec(any::<[u8; 32]>(), 0..4),
            any::<bool>()
        )
            .prop_map(|(authors, last)| Message::Interest { authors, last }),
        (
            prop_oneof![
                Just(Shared::Same),
                Just(Shared::SendList),
                prop::collection::vec(any::<u8>(), 0..8).prop_map(Shared::Bitmap)
            ],
            cursor.clone(),
            any::<bool>(),
            prop::option::of(cursor)
        )
            .prop_map(|(shared, store, cursor_ok, cursor)| Message::Welcome {
                shared,
                store,
                cursor_ok,
                cursor
            }),
        prop::collection::vec(range, 0..6).prop_map(Message::Ranges),
        (prop::collection::vec(item, 0..6), any::<bool>())
            .prop_map(|(items, last)| Message::Heads { items, last }),
        prop::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(author, from, to)| {
                capsule::sync::wire::Wanted { author, from, to }
            }),
            0..4
        )
        .prop_map(Message::Want),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Message::Entries),
        prop::option::of(any::<u64>()).prop_map(|counter| Message::Done { counter }),
        (
            any::<u8>(),
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..440), 0..3)
        )
            .prop_map(|(format, proofs)| Message::Proofs { format, proofs }),
    ]
}

proptest! {
    /// Every message survives its framing; a frame cut short or extended
    /// never decodes to the same message.
    #[test]
    fn messages_round_trip_through_their_frames(m in arb_message(), cut in any::<prop::sample::Index>()) {
        use capsule::sync::wire;
        let frame = wire::encode(&m);
        let len = wire::check_len(frame[..4].try_into().unwrap()).unwrap();
        prop_assert_eq!(len, frame.len() - 4);
        prop_assert_eq!(wire::decode(&frame[4..]).unwrap(), m.clone());
        let body = &frame[4..];
        let short = &body[..cut.index(body.len())];
        prop_assert_ne!(wire::decode(short).ok(), Some(m.clone()));
        let mut long = body.to_vec();
        long.push(0);
        prop_assert!(wire::decode(&long).is_err());
    }

    /// Entries bodies: what push_entry writes, decode_entries reads back.
    #[test]
    fn entries_bodies_round_trip(n in 0u64..20, with_payload in prop::collection::vec(any::<bool>(), 20)) {
        use capsule::sync::wire;
        let identity = Identity::from_seed([3; 32]);
        let entries = log(&identity, n, 0);
        let mut body = Vec::new();
        let expected: Vec<_> = entries
            .iter()
            .zip(&with_payload)
            .map(|((e, p), keep)| (*e, if *keep { p.clone() } else { None }))
            .collect();
        for (e, p) in &expected {
            wire::push_entry(&mut body, e, p.as_deref());
        }
        prop_assert_eq!(wire::decode_entries(&body).unwrap(), expected);
    }
}

/// A session that ends with both sides done tells the owner's node that
/// the peer holds its log up to its head; a post made after it is not
/// held until the next session, and a node that only mirrors an author
/// keeps no holders of that log.
#[test]
fn the_owner_learns_who_holds_its_log() {
    use capsule::store::signer::SignerChange;
    let alice = std::sync::Arc::new(Identity::from_seed([0x51; 32]));
    let owner = Store::open_in_memory().unwrap();
    owner
        .change_signer(alice.author(), SignerChange::Begin)
        .unwrap();
    let post = |text: &str| Record::post(text).encode().unwrap();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        owner.publish(&alice, post(text), 1 + i as u64).unwrap();
    }
    let said = owner.held_by(&alice.author()).unwrap();
    assert!(said.peers.is_empty());
    assert!(said.describe(true).contains("held by no peer yet"));
    let follower = Store::open_in_memory().unwrap();
    follower.mirror(alice.author()).unwrap();
    let session = || {
        run_lockstep(
            (&follower, None, NODE_B),
            (&owner, Some(alice.author()), NODE_A),
        )
        .unwrap()
    };
    session();
    let held = owner.held_by(&alice.author()).unwrap();
    assert_eq!(held.peers.len(), 1);
    assert_eq!(held.peers[0].0, AuthorKey(NODE_B));
    assert_eq!(held.peers[0].1.seq, 3);
    assert_eq!(held.up_to_date, 1);
    assert_eq!(
        held.describe(true),
        "your log is held by 1 peer, 1 of them up to date"
    );
    owner.publish(&alice, post("four"), 4).unwrap();
    let held = owner.held_by(&alice.author()).unwrap();
    assert_eq!((held.peers.len(), held.up_to_date), (1, 0));
    session();
    let held = owner.held_by(&alice.author()).unwrap();
    assert_eq!((held.peers[0].1.seq, held.up_to_date), (4, 1));
    // The follower mirrors alice without following her: no holders kept.
    assert!(follower.held_by(&alice.author()).unwrap().peers.is_empty());
}
