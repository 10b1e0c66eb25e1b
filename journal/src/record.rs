//! The record codec: one fixed 32-byte little-endian header, the payload and
//! zero padding to the next multiple of 8. This module owns the byte layout
//! and keeps these invariants: every encoded record is 8-byte aligned in
//! length, its CRC32C covers every header field except the CRC itself plus
//! the payload, and [`decode`] never panics on any input (it returns
//! `Err(DecodeError)` for anything that is not a complete, intact record).

use crate::error::DecodeError;
use std::mem::{offset_of, size_of};

/// Record magic, the ASCII bytes "MXJR".
pub const RECORD_MAGIC: [u8; 4] = *b"MXJR";
/// Record format version written by this crate.
pub const RECORD_VERSION: u8 = 1;
/// Length of the fixed record header in bytes.
pub const RECORD_HEADER_LEN: usize = 32;
/// Payload length of a commit marker: the first seq of its batch.
pub const COMMIT_PAYLOAD_LEN: usize = 8;
/// Encoded length of a commit marker.
pub const COMMIT_LEN: usize = RECORD_HEADER_LEN + COMMIT_PAYLOAD_LEN;
/// Alignment of every record start and of every encoded length.
pub const RECORD_ALIGN: usize = 8;

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A caller's payload with its seq and timestamp.
    Data = 1,
    /// Ends a batch: seq = last seq of the batch, payload = first seq (u64 LE).
    Commit = 2,
}

/// The header as laid out on disk (documentation of the layout; the codec
/// below writes each field at the asserted offset in little-endian order).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub magic: [u8; 4],
    pub version: u8,
    pub kind: u8,
    pub reserved: u16,
    pub payload_len: u32,
    pub crc32c: u32,
    pub seq: u64,
    pub timestamp_ns: u64,
}

const _: () = assert!(size_of::<RecordHeader>() == RECORD_HEADER_LEN);
const _: () = assert!(offset_of!(RecordHeader, version) == 4);
const _: () = assert!(offset_of!(RecordHeader, kind) == 5);
const _: () = assert!(offset_of!(RecordHeader, reserved) == 6);
const _: () = assert!(offset_of!(RecordHeader, payload_len) == 8);
const _: () = assert!(offset_of!(RecordHeader, crc32c) == 12);
const _: () = assert!(offset_of!(RecordHeader, seq) == 16);
const _: () = assert!(offset_of!(RecordHeader, timestamp_ns) == 24);
const _: () = assert!(RECORD_HEADER_LEN & (RECORD_ALIGN - 1) == 0);
const _: () = assert!(COMMIT_LEN & (RECORD_ALIGN - 1) == 0);

impl RecordHeader {
    fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&self.magic);
        b[4] = self.version;
        b[5] = self.kind;
        b[6..8].copy_from_slice(&self.reserved.to_le_bytes());
        b[8..12].copy_from_slice(&self.payload_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.crc32c.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; RECORD_HEADER_LEN]) -> Self {
        RecordHeader {
            magic: [b[0], b[1], b[2], b[3]],
            version: b[4],
            kind: b[5],
            reserved: u16::from_le_bytes([b[6], b[7]]),
            payload_len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            crc32c: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            seq: u64_at(b, 16),
            timestamp_ns: u64_at(b, 24),
        }
    }
}

/// Reads a little-endian u64 at `off`; the caller guarantees the bounds.
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// CRC32C of a record: the header without its CRC field, then the payload.
/// Every record is checksummed when written (journaler thread) and again
/// whenever it is read (snapshot replica, persister, recovery), and
/// records are small: the crc32c crate's three calls per record (feature
/// check, alignment and three-way-interleaving setup for each of 12, 16
/// and ~100 bytes) were 29% of the journaler thread's user-space
/// instructions and 16% of the replica's. One pass of SSE4.2 `crc32`
/// instructions computes the same value.
fn crc_of(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (detected just above), the only
        // requirement of `crc_of_sse42`.
        return unsafe { crc_of_sse42(header, payload) };
    }
    crc_of_portable(header, payload)
}

fn crc_of_portable(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[0..12]);
    let crc = crc32c::crc32c_append(crc, &header[16..32]);
    crc32c::crc32c_append(crc, payload)
}

/// [`crc_of_portable`] with the CPU's CRC32C instruction: 8 bytes at a time
/// (little-endian words are the bytes in order for this reflected CRC),
/// then the last bytes one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc_of_sse42(header: &[u8; RECORD_HEADER_LEN], payload: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut c = u64::from(!0u32);
    c = _mm_crc32_u64(c, word(&header[0..8]));
    let h = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    c = u64::from(_mm_crc32_u32(c as u32, h));
    c = _mm_crc32_u64(c, word(&header[16..24]));
    c = _mm_crc32_u64(c, word(&header[24..32]));
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        c = _mm_crc32_u64(c, word(w));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub seq: u64,
    pub timestamp_ns: u64,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes this record occupies on disk, padding included.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.payload.len())
    }

    /// For a commit marker, the first seq of the batch it commits.
    pub fn commit_batch_first(&self) -> Option<u64> {
        match self.kind {
            RecordKind::Commit if self.payload.len() == COMMIT_PAYLOAD_LEN => {
                Some(u64_at(self.payload, 0))
            }
            _ => None,
        }
    }
}

/// Rounds `n` up to a multiple of [`RECORD_ALIGN`] (saturating).
pub const fn align_up(n: usize) -> usize {
    match n.checked_add(RECORD_ALIGN - 1) {
        Some(v) => v & !(RECORD_ALIGN - 1),
        None => usize::MAX & !(RECORD_ALIGN - 1),
    }
}

/// Encoded length of a record with a payload of `payload_len` bytes.
pub const fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN.saturating_add(align_up(payload_len))
}

/// Encodes one record at the start of `dst` and returns its encoded length,
/// or `None` when `dst` is too short or the payload exceeds `u32::MAX` bytes.
pub fn encode_into(
    dst: &mut [u8],
    kind: RecordKind,
    seq: u64,
    timestamp_ns: u64,
    payload: &[u8],
) -> Option<usize> {
    let payload_len = u32::try_from(payload.len()).ok()?;
    let total = encoded_len(payload.len());
    let dst = dst.get_mut(..total)?;
    let mut header = RecordHeader {
        magic: RECORD_MAGIC,
        version: RECORD_VERSION,
        kind: kind as u8,
        reserved: 0,
        payload_len,
        crc32c: 0,
        seq,
        timestamp_ns,
    };
    header.crc32c = crc_of(&header.to_bytes(), payload);
    let (head, rest) = dst.split_at_mut(RECORD_HEADER_LEN);
    head.copy_from_slice(&header.to_bytes());
    let (body, padding) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    padding.fill(0);
    Some(total)
}

/// Decodes the record at the start of `buf` (which may extend past it),
/// verifying magic, version, kind, reserved bits, bounds, CRC and padding.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let (header, payload, padding) = split(buf)?;
    let stored = header.crc32c;
    let computed = crc_of(&header.to_bytes(), payload);
    if stored != computed {
        return Err(DecodeError::Crc { stored, computed });
    }
    if padding.iter().any(|&b| b != 0) {
        return Err(DecodeError::Padding);
    }
    let kind = match header.kind {
        1 => RecordKind::Data,
        2 => RecordKind::Commit,
        found => return Err(DecodeError::BadKind { found }),
    };
    Ok(Record {
        kind,
        seq: header.seq,
        timestamp_ns: header.timestamp_ns,
        payload,
    })
}

/// Parses the header and bounds without checking the CRC. Only for records
/// that [`decode`] already accepted (readers re-walk a verified batch).
pub(crate) fn decode_verified(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let (header, payload, _) = split(buf)?;
    let kind = match header.kind {
        1 => RecordKind::Data,
        2 => RecordKind::Commit,
        found => return Err(DecodeError::BadKind { found }),
    };
    Ok(Record {
        kind,
        seq: header.seq,
        timestamp_ns: header.timestamp_ns,
        payload,
    })
}

type Parts<'a> = (RecordHeader, &'a [u8], &'a [u8]);

fn split(buf: &[u8]) -> Result<Parts<'_>, DecodeError> {
    let Some(head) = buf.first_chunk::<RECORD_HEADER_LEN>() else {
        if buf.iter().all(|&b| b == 0) {
            return Err(DecodeError::Zero);
        }
        return Err(DecodeError::Short {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    };
    if head.iter().all(|&b| b == 0) {
        return Err(DecodeError::Zero);
    }
    let header = RecordHeader::from_bytes(head);
    if header.magic != RECORD_MAGIC {
        return Err(DecodeError::BadMagic {
            found: header.magic,
        });
    }
    if header.version != RECORD_VERSION {
        return Err(DecodeError::BadVersion {
            found: header.version,
        });
    }
    if header.kind != RecordKind::Data as u8 && header.kind != RecordKind::Commit as u8 {
        return Err(DecodeError::BadKind { found: header.kind });
    }
    if header.reserved != 0 {
        return Err(DecodeError::Reserved {
            found: header.reserved,
        });
    }
    // u32 -> usize is lossless on every target this crate supports (64-bit).
    let payload_len = header.payload_len as usize;
    let total = encoded_len(payload_len);
    if buf.len() < total {
        return Err(DecodeError::Short {
            needed: total,
            available: buf.len(),
        });
    }
    let payload = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len];
    let padding = &buf[RECORD_HEADER_LEN + payload_len..total];
    Ok((header, payload, padding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest::proptest! {
        /// The SSE4.2 path and the crc32c crate agree on every header and
        /// payload (lengths around the 8-byte word size included).
        #[test]
        fn the_crc_instruction_path_is_the_crates_crc(
            header in proptest::array::uniform32(any::<u8>()),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(crc_of(&header, &payload), crc_of_portable(&header, &payload));
        }
    }

    #[test]
    fn record_crcs_are_crc32c() {
        // A record's CRC is CRC32C (check value 0xE3069283 for
        // "123456789") over the header without its CRC field, then the
        // payload: the same as one crc32c over their concatenation.
        let mut header = [0u8; RECORD_HEADER_LEN];
        for (i, b) in header.iter_mut().enumerate() {
            *b = i as u8 * 7 + 1;
        }
        let payload = b"123456789abcdefg-";
        let mut all = header[0..12].to_vec();
        all.extend_from_slice(&header[16..32]);
        all.extend_from_slice(payload);
        assert_eq!(crc_of(&header, payload), crc32c::crc32c(&all));
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        for n in 0..=payload.len() {
            assert_eq!(
                crc_of(&header, &payload[..n]),
                crc_of_portable(&header, &payload[..n]),
                "payload of {n} bytes"
            );
        }
    }

    fn enc(kind: RecordKind, seq: u64, ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(payload.len())];
        let n = encode_into(&mut v, kind, seq, ts, payload).expect("fits");
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn round_trip_and_alignment() {
        for len in 0..40 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let bytes = enc(RecordKind::Data, 7, 99, &payload);
            assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            let rec = decode(&bytes).expect("valid");
            assert_eq!(rec.kind, RecordKind::Data);
            assert_eq!(
                (rec.seq, rec.timestamp_ns, rec.payload),
                (7, 99, &payload[..])
            );
            assert_eq!(rec.encoded_len(), bytes.len());
        }
    }

    #[test]
    fn layout_is_little_endian_at_documented_offsets() {
        let bytes = enc(RecordKind::Commit, 0x0102, 0x0304, &5u64.to_le_bytes());
        assert_eq!(&bytes[0..4], b"MXJR");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 2);
        assert_eq!(&bytes[8..12], &8u32.to_le_bytes());
        assert_eq!(&bytes[16..24], &0x0102u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x0304u64.to_le_bytes());
        let rec = decode(&bytes).expect("valid");
        assert_eq!(rec.commit_batch_first(), Some(5));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let bytes = enc(RecordKind::Data, 42, 1234, b"hello, journal!");
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b).is_err(), "flip of bit {bit} accepted");
        }
    }

    #[test]
    fn zero_short_and_bad_fields() {
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::Zero));
        assert_eq!(decode(&[0u8; 5]), Err(DecodeError::Zero));
        assert!(matches!(decode(&[1u8; 5]), Err(DecodeError::Short { .. })));
        let bytes = enc(RecordKind::Data, 1, 1, b"abc");
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Short { .. })
        ));
        let mut b = bytes.clone();
        b[4] = 9;
        assert_eq!(decode(&b), Err(DecodeError::BadVersion { found: 9 }));
        let mut b = bytes;
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn encode_refuses_short_buffers() {
        let mut small = [0u8; 16];
        assert_eq!(encode_into(&mut small, RecordKind::Data, 1, 1, b""), None);
    }
}
