//! Certificate paths: the O(log n) entries that link entry k to the head n of
//! its log, through backlinks and skiplinks.
//!
//! Given a trusted head (or any entry signed by the author), a path proves
//! that entry k belongs to the author's log without the entries between. This
//! is what makes a permalink, or a partial mirror, verifiable.

use crate::identity::AuthorKey;
use crate::log::entry::Entry;
use crate::log::lipmaa::lipmaa;
use crate::log::verify::signature_valid;

/// Why a certificate path does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// No entries.
    #[error("the path is empty")]
    Empty,
    /// An entry is by someone else.
    #[error("entry {seq} of the path is by another author")]
    WrongAuthor {
        /// Its seq.
        seq: u64,
    },
    /// An entry's signature fails.
    #[error("entry {seq} of the path has a bad signature")]
    BadSignature {
        /// Its seq.
        seq: u64,
    },
    /// An entry is not linked from the one before it in the path.
    #[error("entry {seq} of the path is not linked from entry {from}")]
    NotLinked {
        /// The entry that should link.
        from: u64,
        /// The entry that should be linked.
        seq: u64,
    },
}

/// The seqs on the shortest path from `head` down to `k`, both included.
///
/// Greedy is optimal here: jump by the skiplink whenever it does not pass `k`,
/// else step back by one. (The test below checks it against breadth-first
/// search.) The path has O(log head) entries.
///
/// # Panics
/// If `k` is 0 or above `head`.
pub fn path_seqs(k: u64, head: u64) -> Vec<u64> {
    assert!(k >= 1 && k <= head, "need 1 <= k <= head");
    let mut seqs = vec![head];
    let mut at = head;
    while at != k {
        let skip = lipmaa(at);
        at = if skip >= k { skip } else { at - 1 };
        seqs.push(at);
    }
    seqs
}

/// The certificate path of entry `k` to `head`, head first, reading entries
/// with `get` (which returns None for an entry it lacks).
pub fn certificate_path(
    k: u64,
    head: u64,
    mut get: impl FnMut(u64) -> Option<Entry>,
) -> Option<Vec<Entry>> {
    path_seqs(k, head).into_iter().map(&mut get).collect()
}

/// Checks a certificate path (head first, target last) of `author`'s log and
/// returns the target entry it proves. The caller decides whether it trusts
/// the first entry (for example, by comparing its id with a known head).
pub fn verify_path<'a>(path: &'a [Entry], author: &AuthorKey) -> Result<&'a Entry, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    for entry in path {
        if entry.author() != *author {
            return Err(PathError::WrongAuthor { seq: entry.seq() });
        }
        if !signature_valid(entry) {
            return Err(PathError::BadSignature { seq: entry.seq() });
        }
    }
    for pair in path.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let id = to.id();
        let linked = (to.seq() + 1 == from.seq() && from.backlink() == id)
            || (to.seq() == lipmaa(from.seq()) && from.skiplink() == id);
        if !linked {
            return Err(PathError::NotLinked {
                from: from.seq(),
                seq: to.seq(),
            });
        }
    }
    Ok(path.last().expect("non-empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shortest path lengths from `head` to every k by breadth-first search
    /// over both kinds of link (links only point down, so one pass suffices).
    fn bfs(head: u64) -> Vec<usize> {
        let mut dist = vec![usize::MAX; head as usize + 1];
        dist[head as usize] = 0;
        for x in (2..=head).rev() {
            let d = dist[x as usize];
            if d == usize::MAX {
                continue;
            }
            for y in [x - 1, lipmaa(x)] {
                dist[y as usize] = dist[y as usize].min(d + 1);
            }
        }
        dist
    }

    #[test]
    fn greedy_is_shortest_for_all_pairs_up_to_1000() {
        for head in 1..=1000u64 {
            let dist = bfs(head);
            for k in 1..=head {
                assert_eq!(
                    path_seqs(k, head).len() - 1,
                    dist[k as usize],
                    "k={k} head={head}"
                );
            }
        }
    }
}
