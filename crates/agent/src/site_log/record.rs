//! The framing of the append-only log file: each record is its length (4 bytes, little
//! endian), a check (the first 8 bytes of the SHA-256 of its body) and its body.
//!
//! Appends are fsynced before Raft is told they are durable, so after a crash only the last
//! record can be incomplete, and it was never acknowledged: a damaged *last* record is a torn
//! write, dropped on reading. A damaged record with a good one after it cannot come from a
//! crash; that file is refused, naming the offset, rather than replayed with a hole.

use sha2::{Digest as _, Sha256};

const HEADER: usize = 4 + 8;

/// One record's bytes, framed.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    // A record is one log operation of a site; far below 4 GiB.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&check(body));
    out.extend_from_slice(body);
    out
}

fn check(body: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(body);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The records of a file's bytes, and how many of its bytes they fill.
#[derive(Debug, PartialEq, Eq)]
pub struct Read<'a> {
    pub records: Vec<&'a [u8]>,
    /// Where the good records end; bytes past it are a torn last write.
    pub good_len: usize,
}

/// A record damaged in the middle of the file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("record at byte {offset} is damaged and is followed by more records")]
pub struct Damaged {
    pub offset: usize,
}

/// Reads every record of `bytes`.
pub fn read(bytes: &[u8]) -> Result<Read<'_>, Damaged> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER) else {
            break;
        };
        let mut len = [0; 4];
        len.copy_from_slice(&header[..4]);
        let end = (at + HEADER).saturating_add(u32::from_le_bytes(len) as usize);
        let Some(body) = bytes.get(at + HEADER..end) else {
            break;
        };
        if header[4..] != check(body) {
            if end == bytes.len() {
                break;
            }
            return Err(Damaged { offset: at });
        }
        records.push(body);
        at = end;
    }
    Ok(Read {
        records,
        good_len: at,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn file(bodies: &[&[u8]]) -> Vec<u8> {
        bodies.iter().flat_map(|b| frame(b)).collect()
    }

    #[test]
    fn records_come_back_in_order() {
        let bytes = file(&[b"one", b"", b"three"]);
        let read = read(&bytes).unwrap();
        assert_eq!(read.records, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(read.good_len, bytes.len());
    }

    #[test]
    fn a_torn_last_record_is_dropped_at_any_cut() {
        let whole = file(&[b"first", b"second record"]);
        let first = frame(b"first").len();
        for cut in first..whole.len() {
            let read = read(&whole[..cut]).unwrap();
            assert_eq!(read.records, vec![&b"first"[..]], "cut at {cut}");
            assert_eq!(read.good_len, first);
        }
    }

    #[test]
    fn a_last_record_written_as_zeros_is_a_torn_write() {
        let mut bytes = file(&[b"first", b"second"]);
        let first = frame(b"first").len();
        for b in &mut bytes[first + HEADER..] {
            *b = 0;
        }
        assert_eq!(read(&bytes).unwrap().good_len, first);
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_refused_with_its_offset() {
        let mut bytes = file(&[b"first", b"second", b"third"]);
        let second = frame(b"first").len();
        bytes[second + HEADER] ^= 1;
        assert_eq!(read(&bytes), Err(Damaged { offset: second }));
    }

    proptest! {
        #[test]
        fn no_bytes_make_reading_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(read) = read(&bytes) {
                prop_assert!(read.good_len <= bytes.len());
            }
        }
    }
}
