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
    println!(
        "wrote a backup of identity {} to {} (readable only by you).",
        identity.author(),
        output.display()
    );
    println!(
        "Keep it offline: whoever has it can post as you. To restore it, copy it to identity.key in the data directory before `capsule init`."
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
            let forks = store.forks()?;
            if let Some(proof) = forks.first() {
                println!(
                    "verification failed: entry {} of author {}: fork: entries {} and {} are both signed for this seq",
                    proof.first.seq(),
                    proof.first.author(),
                    proof.first.id(),
                    proof.second.id()
                );
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            report_verified(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => verification_failed(e),
    }
}

pub(super) fn import(dir: &DataDir, file: &Path) -> Result<ExitCode> {
    let store = open_store(dir)?;
    let (batches, incoming) = mpsc::sync_channel::<ImportMsg>(4);
    let (verified, stored) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| store.import(incoming));
        let mut send = |batch| {
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
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let summary = match verified {
        Ok(summary) => summary,
        Err(VerifyError::Archive(archive::ArchiveError::Io(e))) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())));
        }
        Err(e) => {
            println!("nothing was imported.");
            return verification_failed(e);
        }
    };
    println!(
        "imported {} new entries ({} already held) of {} authors",
        report.accepted, report.duplicates, summary.authors
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
    store.close()?;
    Ok(ExitCode::SUCCESS)
}
