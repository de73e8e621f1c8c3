//! Whole logs in and out: `export` (and the identity backup), `import`,
//! `verify`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::{Context, Result, bail};

use super::{EXIT_INVALID, load_identity, open_store};
use crate::archive::{
    self,
    audit::{self, VerifyError},
};
use crate::data_dir::DataDir;
use crate::identity::AuthorKey;
use crate::log::verify::Summary;
use crate::store::ImportMsg;

pub(super) fn export_identity(dir: &DataDir, output: &Path) -> Result<ExitCode> {
    let identity = load_identity(dir)?;
    if output.exists() {
        bail!(
            "{} already exists; choose a new file for the backup",
            output.display()
        );
    }
    identity.save_new(output)?;
    super::owner::mark_backed_up(dir);
    println!(
        "wrote a backup of identity {} to {} (readable only by you).",
        identity.author(),
        output.display()
    );
    println!(
        "Keep it offline: whoever has it can post as you. To restore it: `capsule restore {} --from KEY@HOST:PORT` (a follower's node), never by copying it into a data directory.",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn export(
    dir: &DataDir,
    author: Option<AuthorKey>,
    all: bool,
    output: &Path,
) -> Result<ExitCode> {
    let store = open_store(dir)?;
    let authors = if all {
        store.heads()?.into_iter().map(|(a, _)| a).collect()
    } else {
        let author = match author {
            Some(a) => a,
            None => load_identity(dir)?.author(),
        };
        if store.head(&author)?.is_none() {
            bail!("this node holds no entries of {author}; nothing to export");
        }
        vec![author]
    };
    let summary = archive::export(&store, &authors, output)
        .with_context(|| format!("cannot export to {}", output.display()))?;
    println!(
        "exported {} entries ({} with payloads) of {} authors to {} ({} bytes)",
        summary.entries,
        summary.payloads,
        summary.authors,
        output.display(),
        summary.bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn report_verified(summary: &Summary) {
    println!(
        "verified {} entries of {} authors ({} payloads)",
        summary.entries, summary.authors, summary.payloads
    );
    if summary.forked > 0 {
        println!(
            "healthy, {} forked: their fork proofs are in it and verify",
            authors_word(summary.forked)
        );
    }
}

fn authors_word(n: u64) -> String {
    format!("{n} {}", if n == 1 { "author" } else { "authors" })
}

fn verification_failed(e: VerifyError) -> Result<ExitCode> {
    match e {
        VerifyError::Entry(bad) => {
            println!("verification failed: {bad}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        e @ VerifyError::MissingPayloads { .. } => {
            println!("verification failed: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        VerifyError::Archive(e) if !matches!(e, archive::ArchiveError::Io(_)) => {
            println!("verification failed: {e}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
        other => Err(other.into()),
    }
}

pub(super) fn verify_archive(file: &Path) -> Result<ExitCode> {
    match audit::verify_file(file, None) {
        Ok(summary) => {
            report_verified(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Archive(archive::ArchiveError::Io(e))) => {
            Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())))
        }
        Err(e) => verification_failed(e),
    }
}

pub(super) fn verify_store(dir: &DataDir) -> Result<ExitCode> {
    let damaged = |e: &crate::store::StoreError| {
        println!("verification failed: {e}");
        Ok(ExitCode::from(EXIT_INVALID))
    };
    let store = match super::open_checked_store(dir) {
        Ok(store) => store,
        Err(e) => match e.downcast_ref::<crate::store::StoreError>() {
            Some(e @ crate::store::StoreError::Damaged { .. }) => return damaged(e),
            _ => return Err(e),
        },
    };
    let owner = load_identity(dir).ok().map(|identity| identity.author());
    let audited = crate::store::catch_panic(|| audit::verify_store_of(&store, owner))
        .unwrap_or_else(|panic| {
            Err(VerifyError::Store(crate::store::StoreError::Damaged {
                path: dir.store(),
                detail: format!("the database failed reading it: {panic}"),
            }))
        });
    if let Err(VerifyError::Store(e @ crate::store::StoreError::Damaged { .. })) = &audited {
        return damaged(e);
    }
    match audited {
        Ok(summary) => {
            // A proof of someone's fork is not damage: the store keeps it on
            // purpose. It must hold up, though: two valid entries, one
            // author and seq, different ids.
            let forks = store.forks()?;
            for proof in &forks {
                let holds = proof.first.author() == proof.second.author()
                    && proof.first.seq() == proof.second.seq()
                    && proof.first.id() != proof.second.id()
                    && crate::log::verify::verify_one(proof.first, None).is_ok()
                    && crate::log::verify::verify_one(proof.second, None).is_ok();
                if !holds {
                    println!(
                        "verification failed: the fork proof kept for author {} does not hold (its entries are not two valid entries for one seq): the store is damaged",
                        proof.first.author()
                    );
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
            }
            report_verified(&summary);
            let blobs = audit::audit_blobs(&store)?;
            println!(
                "blobs: {} sound{}{}",
                blobs.sound,
                if blobs.not_fetched > 0 {
                    format!(", {} of other authors not fetched yet", blobs.not_fetched)
                } else {
                    String::new()
                },
                if blobs.evicted > 0 {
                    format!(
                        ", {} evicted to keep within the media budget",
                        blobs.evicted
                    )
                } else {
                    String::new()
                }
            );
            if !blobs.healthy() {
                for id in &blobs.corrupt {
                    println!(
                        "verification failed: the blob {id} is damaged (its bytes hash to another name)"
                    );
                }
                for id in &blobs.missing_own {
                    println!(
                        "verification failed: the blob {id}, a picture of your own posts, is missing; restore it from a follower's node (GET /api/v1/blobs/{id}) into the blobs folder"
                    );
                }
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            if !forks.is_empty() {
                println!(
                    "healthy, {} forked (each signed two entries for one seq; the proofs are kept, and their entries past the fork refused):",
                    authors_word(forks.len() as u64)
                );
                for proof in &forks {
                    let whose = if Some(proof.first.author()) == owner {
                        " (your own log: this node no longer posts)"
                    } else {
                        ""
                    };
                    println!(
                        "  {} at seq {}: entries {} and {}{whose}",
                        proof.first.author(),
                        proof.first.seq(),
                        proof.first.id(),
                        proof.second.id()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => verification_failed(e),
    }
}

/// What importing an archive did.
pub(super) struct Imported {
    /// The store's report.
    pub report: crate::store::AppendReport,
    /// The authors the archive holds.
    pub authors: std::collections::BTreeSet<AuthorKey>,
}

/// Verifies `file` and imports it into `store`, all or nothing. `Err(code)`
/// when the archive was refused (the reason is printed).
pub(super) fn import_file(
    store: &crate::store::Store,
    file: &Path,
) -> Result<std::result::Result<Imported, ExitCode>> {
    let (batches, incoming) = mpsc::sync_channel::<ImportMsg>(4);
    let mut authors = std::collections::BTreeSet::new();
    let (verified, stored) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| store.import(incoming));
        let mut send = |batch: Vec<crate::log::verify::VerifiedEntry>| {
            authors.extend(batch.iter().map(|v| v.entry().author()));
            batches
                .send(ImportMsg::Batch(batch))
                .map_err(|_| VerifyError::Store(crate::store::StoreError::Closed))
        };
        let verified = audit::verify_file(file, Some(&mut send));
        if verified.is_ok() {
            let _ = batches.send(ImportMsg::Commit);
        }
        drop(batches);
        (
            verified,
            writer.join().expect("the import thread does not panic"),
        )
    });
    // A refusal by the store closes the stream under the verifier, so look at
    // the store's answer first: it says why.
    let report = stored?;
    if let Some(bad) = report.rejected {
        println!("nothing was imported: the archive conflicts with this node's store: {bad}");
        return Ok(Err(ExitCode::from(EXIT_INVALID)));
    }
    match verified {
        Ok(_) => Ok(Ok(Imported { report, authors })),
        Err(VerifyError::Archive(archive::ArchiveError::Io(e))) => {
            Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())))
        }
        Err(e) => {
            println!("nothing was imported.");
            Ok(Err(verification_failed(e)?))
        }
    }
}

/// Prints what an import did to the store.
pub(super) fn report_imported(imported: &Imported) {
    let report = &imported.report;
    println!(
        "imported {} new entries ({} already held) of {} authors",
        report.accepted,
        report.duplicates,
        imported.authors.len()
    );
    for (author, seq) in &report.forks {
        println!("fork found: author {author} signed two entries for seq {seq}; the proof is kept");
    }
    if report.refused_forked > 0 {
        println!(
            "{} entries of forked logs were refused",
            report.refused_forked
        );
    }
    if report.refused_blocked > 0 {
        println!(
            "{} entries of authors you block were left out",
            report.refused_blocked
        );
    }
    if let Some((_, seq)) = report.signed_elsewhere {
        println!(
            "warning: the archive holds your entry {seq}, which this node did not sign: it stopped signing (see `capsule status`)"
        );
    }
}

pub(super) fn import(dir: &DataDir, file: &Path) -> Result<ExitCode> {
    let store = open_store(dir)?;
    let imported = match import_file(&store, file)? {
        Ok(imported) => imported,
        Err(code) => return Ok(code),
    };
    report_imported(&imported);
    // Someone else's logs, imported, are kept: mirrored from now on, so
    // they stay up to date and are served like any mirrored log.
    let owner = load_identity(dir).ok().map(|i| i.author());
    let blocked = store.blocked()?;
    let mut mirrored = 0;
    for author in &imported.authors {
        if Some(*author) != owner && !blocked.contains(author) && store.mirror(*author)? {
            mirrored += 1;
        }
    }
    if mirrored > 0 {
        println!(
            "now mirroring {mirrored} imported authors: your node keeps their logs up to date from peers and serves them (`capsule unmirror KEY` to stop)"
        );
    }
    store.close()?;
    Ok(ExitCode::SUCCESS)
}
