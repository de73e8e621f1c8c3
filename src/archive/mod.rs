//! The archive: a self-contained, versioned file of whole logs (entries and
//! payloads) that anyone can verify offline. schema/archive.md documents it.
//!
//! ```text
//! header  "capsule-archive" (15 bytes) ‖ version (1 byte) = 1
//! frame   0x01 ‖ entry (217 bytes) ‖ 0x00                      entry without payload
//!         0x01 ‖ entry (217 bytes) ‖ 0x01 ‖ payload (payload_len bytes, as the entry signs)
//! end     0x00 ‖ entry count (u64 BE) ‖ blake3 of every byte before this frame (32 bytes)
//! ```
//!
//! Each author's entries come together, in seq order from 1. The payload's
//! length comes from the signed entry, so no unsigned length can disagree
//! with it. The end frame makes truncation certain to be noticed; nothing may
//! follow it.
//!
//! - this file: the format, its [`ArchiveWriter`] and [`ArchiveReader`], and
//!   [`export`] from a store;
//! - [`audit`]: verification of whole archives and stores, on every core.

pub mod audit;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::identity::AuthorKey;
use crate::log::entry::{DecodeError, Entry};
use crate::log::frame::{self, FRAME_ENTRY, FrameError, entry_frame};
use crate::log::verify::Unverified;
use crate::store::StoreError;
use crate::store::{Scanned, Store};

/// Magic bytes at the start of an archive.
pub const MAGIC: &[u8; 15] = b"capsule-archive";
/// The archive version this build writes and reads.
pub const VERSION: u8 = 1;
const FRAME_END: u8 = 0;
/// Why a file is not a well-formed archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the archive magic.
    #[error("not a Capsule archive (it does not start with \"capsule-archive\")")]
    NotAnArchive,
    /// A newer archive version.
    #[error("archive version {0} is newer than this capsule reads ({VERSION}); upgrade capsule")]
    UnknownVersion(u8),
    /// Version 0, which no Capsule ever wrote.
    #[error(
        "archive version 0 was never written by any capsule: the file is not an archive, or is damaged"
    )]
    VersionZero,
    /// The file ends before the end frame.
    #[error("truncated at byte {0}: the archive is incomplete (copy or export it again)")]
    Truncated(u64),
    /// An unknown frame kind.
    #[error("unknown frame kind {kind} at byte {offset}: the archive is damaged")]
    BadFrame {
        /// The kind byte.
        kind: u8,
        /// Where.
        offset: u64,
    },
    /// A payload flag other than 0 or 1.
    #[error("bad payload flag {flag} at byte {offset}: the archive is damaged")]
    BadPayloadFlag {
        /// The flag byte.
        flag: u8,
        /// Where.
        offset: u64,
    },
    /// An entry that does not decode.
    #[error("malformed entry at byte {offset}: {source}")]
    BadEntry {
        /// Where.
        offset: u64,
        /// Why.
        source: DecodeError,
    },
    /// The end frame's count disagrees with the entries read.
    #[error("the archive says it holds {claimed} entries but holds {found}: it is damaged")]
    CountMismatch {
        /// From the end frame.
        claimed: u64,
        /// Counted.
        found: u64,
    },
    /// The checksum of the end frame does not match.
    #[error("checksum mismatch: the archive's unsigned framing is damaged")]
    ChecksumMismatch,
    /// Bytes follow the end frame.
    #[error("bytes follow the end of the archive at byte {0}")]
    TrailingBytes(u64),
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the file failed.
    #[error("cannot write the archive: {0}")]
    Io(#[from] io::Error),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes an archive.
pub struct ArchiveWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut hasher = blake3::Hasher::new();
        let mut header = [0u8; 16];
        header[..15].copy_from_slice(MAGIC);
        header[15] = VERSION;
        out.write_all(&header)?;
        hasher.update(&header);
        Ok(ArchiveWriter {
            out,
            hasher,
            count: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    /// Adds one entry and its payload, if held.
    pub fn write_entry(&mut self, entry: &Entry, payload: Option<&[u8]>) -> io::Result<()> {
        if let Some(p) = payload
            && p.len() as u64 != entry.payload_len()
        {
            // The reader takes the length from the entry: a payload of another
            // length would break every frame after it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the payload's length is not the one its entry signs",
            ));
        }
        for part in entry_frame(entry, payload) {
            self.put(part)?;
        }
        self.count += 1;
        Ok(())
    }

    /// Writes the end frame and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let checksum = *self.hasher.finalize().as_bytes();
        self.out.write_all(&[FRAME_END])?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out.write_all(&checksum)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Size of the reader's buffer. The checksum is fed whole consumed buffers,
/// where blake3 hashes several chunks at once with SIMD: fed frame by frame,
/// it cost the reader more than parsing.
const READ_BUFFER: usize = 256 * 1024;

/// Reads an archive frame by frame. Total and bounded: any bytes give frames
/// or an error, and one frame never holds more than an entry and its
/// (at most 64 KiB) payload.
pub struct ArchiveReader<R: Read> {
    input: R,
    buf: Box<[u8]>,
    /// Next byte to consume in `buf`.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Bytes of `buf` before this one have been fed to the checksum.
    hashed: usize,
    hasher: blake3::Hasher,
    offset: u64,
    count: u64,
    done: bool,
}

impl<R: Read> ArchiveReader<R> {
    /// Reads the header. `input` need not be buffered.
    pub fn new(input: R) -> Result<Self, ArchiveError> {
        let mut reader = ArchiveReader {
            input,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            hashed: 0,
            hasher: blake3::Hasher::new(),
            offset: 0,
            count: 0,
            done: false,
        };
        let mut header = [0u8; 16];
        match reader.fill(&mut header) {
            Err(ArchiveError::Truncated(_)) => return Err(ArchiveError::NotAnArchive),
            other => other?,
        }
        if &header[..15] != MAGIC {
            return Err(ArchiveError::NotAnArchive);
        }
        match header[15] {
            VERSION => {}
            0 => return Err(ArchiveError::VersionZero),
            newer => return Err(ArchiveError::UnknownVersion(newer)),
        }
        Ok(reader)
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Feeds the consumed, unhashed bytes to the checksum.
    fn hash_consumed(&mut self) {
        self.hasher.update(&self.buf[self.hashed..self.pos]);
        self.hashed = self.pos;
    }

    /// Copies the next `out.len()` bytes; every consumed byte goes to the
    /// checksum (lazily, a buffer at a time).
    fn fill(&mut self, out: &mut [u8]) -> Result<(), ArchiveError> {
        let mut copied = 0;
        while copied < out.len() {
            if self.pos == self.end {
                self.hash_consumed();
                self.pos = 0;
                self.hashed = 0;
                self.end = loop {
                    match self.input.read(&mut self.buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                };
                if self.end == 0 {
                    return Err(ArchiveError::Truncated(self.offset));
                }
            }
            let n = (out.len() - copied).min(self.end - self.pos);
            out[copied..copied + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            copied += n;
        }
        Ok(())
    }

    /// The next entry with its payload, or None after a valid end frame.
    pub fn next_entry(&mut self) -> Result<Option<Unverified>, ArchiveError> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mut frame = [0u8; frame::HEADER_LEN];
        self.fill(&mut frame[..1])?;
        match frame[0] {
            FRAME_ENTRY => {
                self.fill(&mut frame[1..])?;
                let (entry, with_payload) = frame::decode_header(&frame).map_err(|e| {
                    let offset = at + e.offset() as u64;
                    match e {
                        FrameError::Entry(source) => ArchiveError::BadEntry { offset, source },
                        FrameError::PayloadFlag(flag) => {
                            ArchiveError::BadPayloadFlag { flag, offset }
                        }
                        FrameError::NotAnEntry(_) => unreachable!("the tag was read above"),
                    }
                })?;
                let payload = if with_payload {
                    // Bounded: Entry::decode caps payload_len at MAX_PAYLOAD.
                    let mut payload = vec![0u8; entry.payload_len() as usize];
                    self.fill(&mut payload)?;
                    Some(payload)
                } else {
                    None
                };
                self.count += 1;
                Ok(Some((entry, payload)))
            }
            FRAME_END => {
                // The checksum covers every byte before this frame: the kind
                // byte just read is the last consumed one, still in `buf`.
                self.pos -= 1;
                self.hash_consumed();
                self.pos += 1;
                self.hashed = self.pos;
                let checksum = self.hasher.finalize();
                let mut end = [0u8; 40];
                self.fill(&mut end)?;
                let claimed = u64::from_be_bytes(end[..8].try_into().expect("8 bytes"));
                if claimed != self.count {
                    return Err(ArchiveError::CountMismatch {
                        claimed,
                        found: self.count,
                    });
                }
                if checksum.as_bytes() != &end[8..] {
                    return Err(ArchiveError::ChecksumMismatch);
                }
                let mut extra = [0u8; 1];
                match self.fill(&mut extra) {
                    Err(ArchiveError::Truncated(_)) => {}
                    Err(e) => return Err(e),
                    Ok(()) => return Err(ArchiveError::TrailingBytes(self.offset - 1)),
                }
                self.done = true;
                Ok(None)
            }
            kind => Err(ArchiveError::BadFrame { kind, offset: at }),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// Of them, entries written with their payload.
    pub payloads: u64,
    /// Authors written.
    pub authors: u64,
    /// Size of the archive.
    pub bytes: u64,
}

/// Exports the whole logs of `authors` to `out`, atomically: the archive is
/// written under a temporary name, synced, then renamed into place. A fork
/// proof held for an author is written after the author's entries, so the
/// archive shows it to whoever verifies it.
pub fn export(
    store: &Store,
    authors: &[AuthorKey],
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    let total: u64 = authors
        .iter()
        .map(|a| store.head(a).map(|h| h.map_or(0, |h| h.seq)))
        .sum::<Result<u64, _>>()?;
    let forks = store.forks()?;
    let bar = crate::progress::bar(total, "exporting");
    let tmp = temp_path(out);
    let file = File::create(&tmp)?;
    let mut writer = ArchiveWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut summary = ExportSummary::default();
    let mut io_error = None;
    for author in authors {
        summary.authors += 1;
        store.scan(author, 1, |Scanned { entry, payload, .. }| {
            if let Err(e) = writer.write_entry(&entry, payload.as_deref()) {
                io_error = Some(e);
                return false;
            }
            summary.entries += 1;
            summary.payloads += u64::from(payload.is_some());
            if summary.entries % 4096 == 0 {
                bar.set_position(summary.entries);
            }
            true
        })?;
        if let Some(e) = io_error.take() {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        for proof in forks.iter().filter(|p| p.second.author() == *author) {
            writer.write_entry(&proof.second, None)?;
            summary.entries += 1;
        }
    }
    let file = writer.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    summary.bytes = file.metadata()?.len();
    drop(file);
    fs::rename(&tmp, out)?;
    bar.finish_and_clear();
    Ok(summary)
}

fn temp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}
