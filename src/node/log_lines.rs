//! A log as `capsule log` prints it: a line per entry, or a JSON object per
//! line, then any fork proof. The running node writes it through its admin
//! socket; the command line writes it itself when no node runs.

use crate::identity::AuthorKey;
use crate::log::present::{Missing, entry_json, format_time};
use crate::log::record::Record;
use crate::store::{Scanned, Store, StoreError};

/// Writes `author`'s log as `capsule log` shows it: one line per entry
/// (text, or one JSON object each with `as_json`), then any fork proof.
pub fn write_log(
    store: &Store,
    author: &AuthorKey,
    as_json: bool,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let failed = |e: StoreError| std::io::Error::other(e.to_string());
    if store.head(author).map_err(failed)?.is_none() {
        if !as_json {
            writeln!(out, "no entries of {author} here")?;
        }
        return out.flush();
    }
    let mut failure = None;
    store
        .scan(author, 1, |row| match write_row(out, row, as_json) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        })
        .map_err(failed)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(proof) = store.fork_of(author).map_err(failed)? {
        writeln!(
            out,
            "FORK at seq {}: entries {} and {} are both signed by this author",
            proof.first.seq(),
            proof.first.id(),
            proof.second.id()
        )?;
    }
    out.flush()
}

fn write_row(out: &mut impl std::io::Write, row: Scanned, as_json: bool) -> std::io::Result<()> {
    let Scanned {
        entry,
        payload,
        deleted_by,
    } = row;
    let record = payload.as_deref().map(Record::decode);
    if as_json {
        let row = entry_json(&entry, record.as_ref(), deleted_by);
        writeln!(out, "{row}")
    } else {
        let text = match (Missing::of(deleted_by, record.as_ref()), &record) {
            (Some(Missing::Deleted(by)), _) => format!("(deleted by entry {by})"),
            (Some(missing), _) => format!("({})", missing.describe()),
            (None, Some(Ok(r))) => r.summary(),
            (None, _) => unreachable!("Missing::of says why there is no record"),
        };
        let when = format_time(entry.timestamp_us());
        writeln!(
            out,
            "{:>6}  {when}  {}  {text}",
            entry.seq(),
            &entry.id().to_string()[..16]
        )
    }
}
