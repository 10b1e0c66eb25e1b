//! Property tests for the record decoder: arbitrary bytes and mutated valid
//! records must only ever produce `Ok` or `Err`, never a panic, and a valid
//! record must survive a round trip.

use journal::record::{decode, encode_into, encoded_len, RecordKind};
use proptest::prelude::*;

fn encode(kind: RecordKind, seq: u64, ts: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; encoded_len(payload.len())];
    encode_into(&mut v, kind, seq, ts, payload).expect("fits");
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_magic_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..256),
        version in prop_oneof![Just(1u8), any::<u8>()],
        kind in 0u8..4,
    ) {
        let mut bytes = b"MXJR".to_vec();
        bytes.push(version);
        bytes.push(kind);
        bytes.extend_from_slice(&tail);
        let _ = decode(&bytes);
    }

    #[test]
    fn round_trip(seq in any::<u64>(), ts in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..300),
                  commit in any::<bool>(), extra in proptest::collection::vec(any::<u8>(), 0..16)) {
        let kind = if commit { RecordKind::Commit } else { RecordKind::Data };
        let mut bytes = encode(kind, seq, ts, &payload);
        let len = bytes.len();
        prop_assert_eq!(len % 8, 0);
        bytes.extend_from_slice(&extra); // decoding ignores what follows
        let rec = decode(&bytes).expect("valid record");
        prop_assert_eq!((rec.kind, rec.seq, rec.timestamp_ns, rec.payload), (kind, seq, ts, &payload[..]));
        prop_assert_eq!(rec.encoded_len(), len);
    }

    #[test]
    fn mutated_records_never_panic_and_single_flips_are_caught(
        seq in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..200),
        bit in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let bytes = encode(RecordKind::Data, seq, 42, &payload);
        let mut flipped = bytes.clone();
        let bit = bit % (bytes.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&flipped).is_err(), "single bit flip {} accepted", bit);

        let mut mutated = bytes.clone();
        for (i, x) in edits {
            let i = i % mutated.len();
            mutated[i] = x;
        }
        let _ = decode(&mutated);
        let _ = decode(&mutated[..cut % (mutated.len() + 1)]);
    }
}
