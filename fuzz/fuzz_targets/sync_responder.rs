//! The responder's state machine fed arbitrary message sequences: it never
//! panics, and whatever it agrees to serve lies within what it holds.
#![no_main]

use std::collections::HashMap;

use capsule::identity::AuthorKey;
use capsule::log::entry::EntryId;
use capsule::sync::protocol::{Action, HeadInfo, Role, Session, Snapshot, Stored};
use capsule::sync::wire;
use libfuzzer_sys::fuzz_target;

fn snapshot() -> Snapshot {
    let mut heads = HashMap::new();
    let mut wanted = Vec::new();
    for i in 0..64u8 {
        let author = AuthorKey([i; 32]);
        wanted.push(author);
        if i % 3 != 0 {
            heads.insert(
                author,
                HeadInfo {
                    seq: i as u64 * 7 + 1,
                    id: EntryId([i ^ 0x5a; 32]),
                    change: i as u64,
                },
            );
        }
    }
    Snapshot {
        store: [1; 16],
        counter: 64,
        wanted,
        heads,
        proofs: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let snap = snapshot();
    let held: HashMap<AuthorKey, u64> = snap.heads.iter().map(|(a, h)| (*a, h.seq)).collect();
    let mut session = Session::new(Role::Responder, snap, None);
    // Frames: u16 length, then that many bytes of message.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let body = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        let Ok(message) = wire::decode(body) else {
            continue;
        };
        let Ok(actions) = session.on_message(message) else {
            return;
        };
        let mut queue = actions;
        while let Some(action) = queue.pop() {
            match action {
                Action::Serve { author, from, to } => {
                    assert!(from >= 1 && from <= to);
                    assert!(to <= held.get(&author).copied().unwrap_or(0));
                }
                Action::Store(_) => queue.extend(session.on_stored(&Stored::nothing(1))),
                _ => {}
            }
        }
    }
});
