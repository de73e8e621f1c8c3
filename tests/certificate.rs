//! Certificate paths against brute force, on a real log of 10,000 entries.

use std::sync::OnceLock;

use capsule::log::certificate::{PathError, certificate_path, path_seqs, verify_path};
use capsule::log::entry::Entry;
use capsule::log::lipmaa::lipmaa;
use proptest::prelude::*;

use crate::common::{make_log, test_identity};

const N: u64 = 10_000;

fn log() -> &'static [Entry] {
    static LOG: OnceLock<Vec<Entry>> = OnceLock::new();
    LOG.get_or_init(|| {
        make_log(&test_identity(1), N)
            .into_iter()
            .map(|(e, _)| e)
            .collect()
    })
}

/// Shortest distance from `head` to `k` by breadth-first search.
fn brute_force(k: u64, head: u64) -> usize {
    let mut dist = vec![usize::MAX; head as usize + 1];
    dist[head as usize] = 0;
    for x in (k.max(2)..=head).rev() {
        let d = dist[x as usize];
        if d == usize::MAX {
            continue;
        }
        for y in [x - 1, lipmaa(x)] {
            dist[y as usize] = dist[y as usize].min(d + 1);
        }
    }
    dist[k as usize]
}

fn get(n: u64) -> Option<Entry> {
    log().get((n - 1) as usize).copied()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn path_is_shortest_and_verifies((head, k) in (1..=N).prop_flat_map(|h| (Just(h), 1..=h))) {
        let path = certificate_path(k, head, get).unwrap();
        prop_assert_eq!(path.len() - 1, brute_force(k, head));
        // O(log n): at most a few steps per power of three.
        prop_assert!(path.len() <= 4 * 64 - (head.leading_zeros() as usize) * 4 + 2);
        let author = test_identity(1).author();
        let target = verify_path(&path, &author).unwrap();
        prop_assert_eq!(target.seq(), k);
        prop_assert_eq!(path[0].seq(), head);
    }

    #[test]
    fn a_broken_path_is_refused((head, k) in (3..=N).prop_flat_map(|h| (Just(h), 1..=h - 2))) {
        let author = test_identity(1).author();
        let mut path = certificate_path(k, head, get).unwrap();
        if path.len() > 2 {
            // Skip a step: the next entry is no longer linked.
            path.remove(1);
            let refused = matches!(verify_path(&path, &author), Err(PathError::NotLinked { .. }));
            prop_assert!(refused);
        }
        let mut path = certificate_path(k, head, get).unwrap();
        let last = path.len() - 1;
        // Substitute the target with its neighbour.
        path[last] = get(if k > 1 { k - 1 } else { k + 1 }).unwrap();
        prop_assert!(verify_path(&path, &author).is_err());
        let other = test_identity(2).author();
        let refused = matches!(verify_path(&path, &other), Err(PathError::WrongAuthor { .. }));
        prop_assert!(refused);
    }
}

#[test]
fn longest_path_up_to_10000_is_logarithmic() {
    let worst = (1..=N)
        .step_by(97)
        .map(|k| path_seqs(k, N).len())
        .max()
        .unwrap();
    assert!(worst < 40, "worst path {worst}");
}
