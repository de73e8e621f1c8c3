//! What the pages show, read from the store: a log's posts, the owner's
//! merged home timeline, a thread, a profile.

use crate::identity::AuthorKey;
use crate::log::present::Missing;
use crate::log::record::{BlobRef, Picture, Record};
use crate::store::{Scanned, Store, StoreError};

/// One post as the pages show it.
#[derive(Debug, Clone)]
pub struct Post {
    /// The author.
    pub author: AuthorKey,
    /// Its seq.
    pub seq: u64,
    /// When, µs since the epoch.
    pub timestamp_us: u64,
    /// The text; None when deleted or not held.
    pub text: Option<String>,
    /// Why there is no text.
    pub missing: &'static str,
    /// The entry it answers.
    pub reply_to: Option<(AuthorKey, u64)>,
    /// Its pictures, and whether this node holds each.
    pub pictures: Vec<Shown>,
    /// The author's name and picture, as their newest profile gives them
    /// (filled in by [`dress`]).
    pub by: Byline,
}

/// A picture of a post, as the pages show it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The picture as the record names it.
    pub picture: Picture,
    /// Whether this node holds the picture's bytes (fetched, not evicted).
    pub held: bool,
    /// Whether it holds the thumbnail's.
    pub thumbnail_held: bool,
}

/// Who wrote a post, for its header.
#[derive(Debug, Clone, Default)]
pub struct Byline {
    /// The profile's name, if any.
    pub name: Option<String>,
    /// The profile picture's hash, when this node holds it.
    pub avatar: Option<[u8; 32]>,
    /// The author's node (`https://…`), when known: where a picture this
    /// node does not hold can be seen.
    pub origin: Option<String>,
}

/// Whether `store` holds blob `hash`: named, not evicted, its file there.
pub fn holds(store: &Store, hash: &[u8; 32]) -> Result<bool, StoreError> {
    Ok(store.blob_row(hash)?.is_some_and(|r| r.evicted_us == 0)
        && store.blobs().has(&crate::store::blobs::BlobId(*hash)))
}

/// Fills in what pages show beside a post's record: whether each picture
/// is held, and the author's name, picture and origin (looked up once per
/// author).
pub fn dress(store: &Store, posts: &mut [Post]) -> Result<(), StoreError> {
    let mut bylines: std::collections::HashMap<AuthorKey, Byline> = Default::default();
    for post in posts {
        for shown in &mut post.pictures {
            shown.held = holds(store, &shown.picture.blob.hash)?;
            shown.thumbnail_held = match &shown.picture.thumbnail {
                Some(t) => holds(store, &t.blob.hash)?,
                None => false,
            };
        }
        if let Some(by) = bylines.get(&post.author) {
            post.by = by.clone();
            continue;
        }
        let by = byline(store, &post.author)?;
        bylines.insert(post.author, by.clone());
        post.by = by;
    }
    Ok(())
}

/// The author's name, held picture and origin.
pub fn byline(store: &Store, author: &AuthorKey) -> Result<Byline, StoreError> {
    let mut by = Byline {
        origin: store.address(author)?.and_then(|a| a.web),
        ..Byline::default()
    };
    if let Some(p) = profile(store, author)? {
        by.name = (!p.name.is_empty()).then_some(p.name);
        if let Some(avatar) = p.avatar
            && holds(store, &avatar.hash)?
        {
            by.avatar = Some(avatar.hash);
        }
    }
    Ok(by)
}

/// Up to `limit` entries of `author` below seq `before` (newest first),
/// keeping posts only; and the `before` of the next older page.
pub fn posts(
    store: &Store,
    author: &AuthorKey,
    before: Option<u64>,
    limit: u64,
) -> Result<(Vec<Post>, Option<u64>), StoreError> {
    let Some(head) = store.head(author)? else {
        return Ok((Vec::new(), None));
    };
    let end = before.map_or(head.seq, |b| b.saturating_sub(1).min(head.seq));
    if end == 0 {
        return Ok((Vec::new(), None));
    }
    let start = end.saturating_sub(limit - 1).max(1);
    let mut out = Vec::new();
    store.scan(author, start, |s| {
        if s.entry.seq() > end {
            return false;
        }
        if let Some(post) = as_post(&s) {
            out.push(post);
        }
        true
    })?;
    out.reverse();
    dress(store, &mut out)?;
    Ok((out, (start > 1).then_some(start)))
}

/// A scanned entry as a post; None for records that are not posts.
pub fn as_post(s: &Scanned) -> Option<Post> {
    let mut post = Post {
        author: s.entry.author(),
        seq: s.entry.seq(),
        timestamp_us: s.entry.timestamp_us(),
        text: None,
        missing: "",
        reply_to: None,
        pictures: Vec::new(),
        by: Byline::default(),
    };
    let record = s.payload.as_deref().map(Record::decode);
    if let Some(missing) = Missing::of(s.deleted_by, record.as_ref()) {
        post.missing = missing.describe();
        return Some(post);
    }
    match record {
        Some(Ok(Record::Post { text, reply_to, .. })) => {
            post.text = Some(text);
            post.reply_to = reply_to.map(|r| (AuthorKey(r.author), r.seq));
        }
        Some(Ok(Record::PostWithPictures {
            text,
            reply_to,
            pictures,
        })) => {
            post.text = Some(text);
            post.reply_to = reply_to.map(|r| (AuthorKey(r.author), r.seq));
            post.pictures = pictures
                .into_iter()
                .map(|picture| Shown {
                    picture,
                    held: false,
                    thumbnail_held: false,
                })
                .collect();
        }
        _ => return None,
    }
    Some(post)
}

/// Authors merged into the owner's home timeline at most (the owner and
/// the followed, in key order).
pub const MAX_TIMELINE_AUTHORS: usize = 500;

/// Entries of one author read for one page of the home timeline at most.
pub const MAX_TIMELINE_SCAN: u64 = 200;

/// The newest `limit` posts of `authors` stamped before `until_us`, newest
/// first, and the `until` of the next page.
pub fn merged(
    store: &Store,
    authors: &[AuthorKey],
    until_us: Option<u64>,
    limit: u64,
) -> Result<(Vec<Post>, Option<u64>), StoreError> {
    const WINDOW: u64 = 32;
    let mut all = Vec::new();
    for author in authors.iter().take(MAX_TIMELINE_AUTHORS) {
        let (mut before, mut read, mut found) = (None, 0, 0);
        loop {
            let (page, next) = posts(store, author, before, WINDOW)?;
            read += WINDOW;
            for post in page {
                if until_us.is_none_or(|u| post.timestamp_us < u) {
                    all.push(post);
                    found += 1;
                }
            }
            if found >= limit || read >= MAX_TIMELINE_SCAN {
                break;
            }
            match next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
    }
    all.sort_by(|a, b| {
        (b.timestamp_us, b.author.0, b.seq).cmp(&(a.timestamp_us, a.author.0, a.seq))
    });
    all.truncate(limit as usize);
    let next = (all.len() as u64 == limit)
        .then(|| all.last().map(|p| p.timestamp_us))
        .flatten();
    Ok((all, next))
}

/// Ancestors shown above a post on its page.
pub const THREAD_DEPTH: usize = 16;

/// Replies shown below a post on its page.
pub const MAX_REPLIES: usize = 100;

/// An author's profile as the pages show it.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// Biography.
    pub bio: String,
    /// The picture.
    pub avatar: Option<BlobRef>,
}

/// The author's newest profile, if the store holds it.
pub fn profile(store: &Store, author: &AuthorKey) -> Result<Option<Profile>, StoreError> {
    let Some(seq) = store.profile_seq(author)? else {
        return Ok(None);
    };
    Ok(match scanned(store, author, seq)?.and_then(|s| s.payload) {
        Some(payload) => match Record::decode(&payload) {
            Ok(Record::Profile {
                name, bio, avatar, ..
            }) => Some(Profile { name, bio, avatar }),
            _ => None,
        },
        None => None,
    })
}

/// Entry `seq` of `author` with its payload, if held.
pub fn scanned(store: &Store, author: &AuthorKey, seq: u64) -> Result<Option<Scanned>, StoreError> {
    let mut found = None;
    store.scan(author, seq, |row| {
        if row.entry.seq() == seq {
            found = Some(row);
        }
        false
    })?;
    Ok(found)
}

/// What a post's page shows: the post with what it answers and what
/// answers it.
pub struct Thread {
    /// The posts it answers, oldest first (at most [`THREAD_DEPTH`]).
    pub ancestors: Vec<Post>,
    /// The post itself.
    pub row: Scanned,
    /// The post as shown, if the entry is a post.
    pub post: Option<Post>,
    /// Posts answering it, oldest first (at most [`MAX_REPLIES`]).
    pub replies: Vec<Post>,
}

/// The thread around `author`'s entry `seq`, if this node holds it.
pub fn thread(store: &Store, author: AuthorKey, seq: u64) -> Result<Option<Thread>, StoreError> {
    let Some(row) = scanned(store, &author, seq)? else {
        return Ok(None);
    };
    let mut ancestors = Vec::new();
    let mut up = as_post(&row).and_then(|p| p.reply_to);
    while let Some((a, s)) = up {
        if ancestors.len() == THREAD_DEPTH {
            break;
        }
        match scanned(store, &a, s)?.as_ref().and_then(as_post) {
            Some(parent) => {
                up = parent.reply_to;
                ancestors.push(parent);
            }
            None => break,
        }
    }
    ancestors.reverse();
    let mut replies = Vec::new();
    let blocked = store.blocked()?;
    ancestors.retain(|p: &Post| !blocked.contains(&p.author));
    for (a, s) in store.replies(&author, seq, MAX_REPLIES)? {
        if blocked.contains(&a) {
            continue;
        }
        if let Some(post) = scanned(store, &a, s)?.as_ref().and_then(as_post) {
            replies.push(post);
        }
    }
    replies.sort_by_key(|p| p.timestamp_us);
    dress(store, &mut ancestors)?;
    dress(store, &mut replies)?;
    let mut post: Vec<Post> = as_post(&row).into_iter().collect();
    dress(store, &mut post)?;
    Ok(Some(Thread {
        ancestors,
        row,
        post: post.pop(),
        replies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::pages::PAGE_SIZE;
    use crate::identity::Identity;
    use crate::log::builder::LogBuilder;
    use crate::log::verify::verify_batch;

    /// Two logs with interleaved clocks read back merged, newest first,
    /// and paging by `until` visits every post once.
    #[test]
    fn merged_timeline_interleaves_and_pages() {
        let store = Store::open_in_memory().unwrap();
        let mut authors = Vec::new();
        for (n, offset) in [(1u8, 0u64), (2, 5)] {
            let identity = Identity::from_seed([n; 32]);
            let mut builder = LogBuilder::new(&identity);
            let batch = (1..=45u64)
                .map(|seq| {
                    let payload = Record::post(format!("{n}:{seq}")).encode().unwrap();
                    (
                        builder.next(1_000_000 + seq * 10 + offset, &payload),
                        Some(payload),
                    )
                })
                .collect();
            store.append(verify_batch(batch).unwrap()).unwrap();
            authors.push(identity.author());
        }
        let (mut seen, mut until) = (Vec::new(), None);
        loop {
            let (page, next) = merged(&store, &authors, until, PAGE_SIZE).unwrap();
            assert!(
                page.windows(2)
                    .all(|w| w[0].timestamp_us > w[1].timestamp_us)
            );
            seen.extend(page.iter().map(|p| p.text.clone().unwrap()));
            match next {
                Some(n) => until = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 90);
        assert_eq!(&seen[..3], &["2:45", "1:45", "2:44"]);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 90, "no post twice");
    }
}
