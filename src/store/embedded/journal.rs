//! An append-only journal file of checksummed, length-prefixed records: one record per
//! acknowledged write, made durable (`fdatasync`) before the write is acknowledged.
//!
//! A record is `len: u32 LE`, `crc: u32 LE`, then `len` bytes of payload; `crc` is the
//! CRC-32 of the length bytes and the payload, so a damaged length is caught as well as a
//! damaged payload. Records are only ever appended, and a write is acknowledged only once
//! its record is synced, so a crash can damage at most the last record: a bad record
//! that ends the file is a torn tail (dropped), a bad record followed by more data is
//! corruption (refused).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Larger than any record cohort writes (a reseed of a very large environment stays far
/// below it); a length above it is damage, not data.
const MAX_RECORD: u32 = 1 << 30;

/// An open journal, appended to by the store's one writer.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of whole, synced records.
    len: u64,
    /// Set when a failed append could not be cut back off: the file may end in a partial
    /// record, so nothing more may be appended after it.
    poisoned: bool,
}

impl Journal {
    /// Opens `path` for appending after its first `len` bytes (creating it when absent);
    /// anything beyond `len` (a torn tail) is cut off and the cut made durable.
    pub fn open(path: &Path, len: u64) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Journal { path: path.to_owned(), file, len, poisoned: false })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record and syncs it. On failure the file is cut back to its previous
    /// length, so a failed write leaves no partial record behind.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if self.poisoned {
            return Err(std::io::Error::other(format!(
                "journal {} ends in a record that could not be removed after a failed write; restart to recover",
                self.path.display()
            )));
        }
        let frame = frame(payload)?;
        let result = self.file.write_all(&frame).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(error) => {
                if self.file.set_len(self.len).and_then(|()| self.file.sync_data()).is_err() {
                    self.poisoned = true;
                }
                Err(error)
            }
        }
    }
}

/// One record's bytes on disk.
fn frame(payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_RECORD)
        .ok_or_else(|| std::io::Error::other(format!("a journal record of {} bytes is too large", payload.len())))?;
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&checksum(&len.to_le_bytes(), payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// What a journal file holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// The payloads of its whole, intact records, oldest first.
    pub records: Vec<Vec<u8>>,
    /// Bytes of those records (where the next append goes).
    pub valid_len: u64,
    /// What is wrong with the bytes after `valid_len` when the file ends in a damaged or
    /// partial record (a torn tail).
    pub torn_tail: Option<String>,
}

/// A journal damaged before its last record.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A damaged record with intact data after it: not a torn write.
    #[error("record at byte {offset} is damaged ({what}) and is followed by {after} more bytes")]
    Corrupt { offset: u64, what: String, after: u64 },
}

/// Reads every intact record of the journal at `path`.
pub fn read(path: &Path) -> Result<Contents, ReadError> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut contents = Contents::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let damage = if rest.len() < HEADER {
            Some((format!("{} bytes of a record header", rest.len()), bytes.len()))
        } else {
            let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
            let len = u32::from_le_bytes(len_bytes);
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            let end = HEADER.saturating_add(len as usize);
            if len > MAX_RECORD {
                Some((format!("impossible length {len}"), bytes.len()))
            } else if rest.len() < end {
                Some((format!("{} of {len} payload bytes", rest.len() - HEADER), bytes.len()))
            } else if checksum(&len_bytes, &rest[HEADER..end]) != crc {
                Some(("checksum mismatch".to_owned(), at + end))
            } else {
                contents.records.push(rest[HEADER..end].to_vec());
                at += end;
                contents.valid_len = at as u64;
                None
            }
        };
        if let Some((what, end)) = damage {
            if end < bytes.len() {
                return Err(ReadError::Corrupt { offset: at as u64, what, after: (bytes.len() - end) as u64 });
            }
            contents.torn_tail = Some(format!("{} bytes from byte {at}: {what}", bytes.len() - at));
            break;
        }
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_with(records: &[&[u8]]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("j.log");
        let mut journal = Journal::open(&path, 0).expect("opens");
        for r in records {
            journal.append(r).expect("appends");
        }
        (dir, path)
    }

    #[test]
    fn records_read_back_in_order() {
        let (_dir, path) = journal_with(&[b"one", b"", b"three"]);
        let contents = read(&path).expect("reads");
        assert_eq!(contents.records, vec![b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert_eq!(contents.valid_len, std::fs::metadata(&path).expect("meta").len());
        assert!(contents.torn_tail.is_none());
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_a_torn_tail() {
        let (_dir, path) = journal_with(&[b"one", b"two-two"]);
        let full = std::fs::metadata(&path).expect("meta").len();
        for cut in 1..(HEADER as u64 + 7) {
            let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
            file.set_len(full - cut).expect("cut");
            let contents = read(&path).expect("a torn tail is not an error");
            assert_eq!(contents.records, vec![b"one".to_vec()], "cut {cut}");
            assert!(contents.torn_tail.is_some());
        }
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_a_torn_tail_and_in_an_earlier_one_is_corruption() {
        let (_dir, path) = journal_with(&[b"first", b"second"]);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let contents = read(&path).expect("tail");
        assert_eq!(contents.records, vec![b"first".to_vec()]);
        assert!(contents.torn_tail.is_some());

        bytes[last] ^= 0x40;
        bytes[HEADER + 1] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(read(&path), Err(ReadError::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn reopening_cuts_the_torn_tail_and_appends_after_the_last_whole_record() {
        let (_dir, path) = journal_with(&[b"one", b"two"]);
        let full = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(full - 2).expect("cut");
        let contents = read(&path).expect("reads");
        let mut journal = Journal::open(&path, contents.valid_len).expect("reopens");
        journal.append(b"three").expect("appends");
        assert_eq!(read(&path).expect("reads").records, vec![b"one".to_vec(), b"three".to_vec()]);
    }
}
