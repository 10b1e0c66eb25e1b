//! Request authentication for SIGNED endpoints: HMAC-SHA256 and Ed25519
//! signatures, the WebSocket API's signing payload, API-key format checks
//! and Binance's timing rule (`timestamp` against `recvWindow`).
//!
//! Invariants: every failure is the contract's `BinanceError` (-1022 bad
//! signature, -1021 timing, -1131/-1100 bad recvWindow, -2014 key format);
//! HMAC tags are compared in constant time (`ring::hmac::verify`) after a
//! case-insensitive hex decode; Ed25519 uses strict verification (no
//! malleable signatures, no weak keys). Nothing here reads a clock: callers
//! pass `now_ms`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::errors::BinanceError;
use super::params::Params;

type HmacSha256 = Hmac<Sha256>;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Longest signature text looked at (an Ed25519 signature is 88 base64
/// characters, HMAC 64 hex); anything longer is rejected unread.
const MAX_SIGNATURE_CHARS: usize = 256;

/// Hex HMAC-SHA256 of `payload` under `secret`, lower case: what a client
/// computes (tests and tools use it; the server checks with
/// [`SigningKey::verify`], built on ring).
pub fn hmac_sha256_hex(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = new_hmac(secret);
    mac.update(payload);
    hex_lower(&mac.finalize().into_bytes())
}

/// `bytes` as lower-case hex, as signatures are sent.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn new_hmac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot
    // fail; the fallback only keeps the function total.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

/// Verify a hex HMAC-SHA256 signature (either case) over `payload`.
/// -1022 when it is malformed or does not match.
pub fn verify_hmac_sha256(
    secret: &[u8],
    payload: &[u8],
    signature_hex: &str,
) -> Result<(), BinanceError> {
    verify_hmac_keyed(&server_hmac_key(secret), payload, signature_hex)
}

/// The server's HMAC key: `ring`'s, whose SHA-256 is assembly with a
/// dispatch on the CPU's extensions (SHA-NI, AVX2, SSSE3). On a host
/// without SHA-NI a check of a 194-byte order payload takes 1.08 us where
/// RustCrypto's portable code takes 1.75-2.33 us (`cargo bench -p benches
/// --bench auth`), and the signature check was 9% of the server's CPU at
/// 60,000 WebSocket orders/s. The key's two pad blocks
/// are hashed once here, not per request. Clients (tests, load
/// generators) sign with RustCrypto's `hmac` ([`hmac_sha256_hex`]), so
/// every signed test also checks one implementation against the other.
fn server_hmac_key(secret: &[u8]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)
}

/// [`verify_hmac_sha256`] with the key already built (kept per API key).
fn verify_hmac_keyed(
    keyed: &ring::hmac::Key,
    payload: &[u8],
    signature_hex: &str,
) -> Result<(), BinanceError> {
    let tag = decode_hex_32(signature_hex).ok_or_else(BinanceError::invalid_signature)?;
    ring::hmac::verify(keyed, payload, &tag).map_err(|_| BinanceError::invalid_signature())
}

fn decode_hex_32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_nibble(pair[0])?;
        let lo = hex_nibble(pair[1])?;
        out[i] = hi << 4 | lo;
    }
    Some(out)
}

/// Value of a hex digit (either case), `None` for any other byte.
pub(crate) fn hex_nibble(b: u8) -> Option<u8> {
    match HEX_VALUES[usize::from(b)] {
        NOT_HEX => None,
        v => Some(v),
    }
}

const NOT_HEX: u8 = 0xff;

/// Byte -> hex digit value (either case), `NOT_HEX` for anything else: a
/// table instead of a three-way range match per character (64 per
/// signature).
const HEX_VALUES: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Why an uploaded Ed25519 public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("public key is not valid base64 or PEM")]
    Encoding,
    #[error("public key is not an Ed25519 key (expected a PEM `PUBLIC KEY`, 44-byte SPKI or 32 raw bytes)")]
    NotEd25519,
    #[error("public key is not a valid Ed25519 point or is a weak key")]
    InvalidPoint,
}

/// Parse an Ed25519 public key as users upload it: a PEM `-----BEGIN PUBLIC
/// KEY-----` block (what Binance asks for), the bare base64 of that SPKI
/// DER, or the base64 of the 32 raw key bytes.
pub fn parse_ed25519_public_key(text: &str) -> Result<VerifyingKey, PublicKeyError> {
    let text = text.trim();
    if text.len() > 4096 {
        return Err(PublicKeyError::Encoding);
    }
    let b64: String = if text.starts_with("-----BEGIN") {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("-----BEGIN PUBLIC KEY-----") {
            return Err(PublicKeyError::NotEd25519);
        }
        let mut body = String::new();
        let mut ended = false;
        for line in lines {
            if line == "-----END PUBLIC KEY-----" {
                ended = true;
                break;
            }
            body.push_str(line);
        }
        if !ended {
            return Err(PublicKeyError::Encoding);
        }
        body
    } else {
        text.chars().filter(|c| !c.is_ascii_whitespace()).collect()
    };
    let der = BASE64
        .decode(b64.as_bytes())
        .map_err(|_| PublicKeyError::Encoding)?;
    let raw: [u8; 32] = match der.len() {
        32 => der
            .as_slice()
            .try_into()
            .map_err(|_| PublicKeyError::NotEd25519)?,
        44 if der[..12] == ED25519_SPKI_PREFIX => der[12..]
            .try_into()
            .map_err(|_| PublicKeyError::NotEd25519)?,
        _ => return Err(PublicKeyError::NotEd25519),
    };
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| PublicKeyError::InvalidPoint)?;
    if key.is_weak() {
        return Err(PublicKeyError::InvalidPoint);
    }
    Ok(key)
}

/// Verify a base64 Ed25519 signature over `payload` (-1022 otherwise).
/// `signature_b64` is the parameter's decoded value; a client that did not
/// percent-encode `+` has had it turned into a space by form decoding, so
/// spaces are read back as `+` (base64 has no spaces, nothing is lost).
/// Both the padded and unpadded alphabets are accepted.
pub fn verify_ed25519(
    key: &VerifyingKey,
    payload: &[u8],
    signature_b64: &str,
) -> Result<(), BinanceError> {
    if signature_b64.len() > MAX_SIGNATURE_CHARS {
        return Err(BinanceError::invalid_signature());
    }
    let fixed: String = signature_b64
        .chars()
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    let trimmed = fixed.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed.as_bytes())
        .map_err(|_| BinanceError::invalid_signature())?;
    let sig_bytes: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| BinanceError::invalid_signature())?;
    let signature = Signature::from_bytes(&sig_bytes);
    key.verify_strict(payload, &signature)
        .map_err(|_| BinanceError::invalid_signature())
}

/// The secret half of an API key, as the gateway looks it up.
#[derive(Clone)]
pub enum SigningKey {
    /// HMAC-SHA256 keyed with the secret the user was shown (build it
    /// with [`SigningKey::hmac`]).
    Hmac(Box<ring::hmac::Key>),
    /// Ed25519 public key the user uploaded.
    Ed25519(VerifyingKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the HMAC secret.
        match self {
            SigningKey::Hmac(_) => f.write_str("SigningKey::Hmac(..)"),
            SigningKey::Ed25519(k) => write!(f, "SigningKey::Ed25519({k:?})"),
        }
    }
}

impl SigningKey {
    /// An HMAC key from its secret.
    pub fn hmac(secret: &[u8]) -> SigningKey {
        SigningKey::Hmac(Box::new(server_hmac_key(secret)))
    }

    /// Verify `signature` over `payload` with this key.
    pub fn verify(&self, payload: &[u8], signature: &str) -> Result<(), BinanceError> {
        match self {
            SigningKey::Hmac(keyed) => verify_hmac_keyed(keyed, payload, signature),
            SigningKey::Ed25519(key) => verify_ed25519(key, payload, signature),
        }
    }
}

/// Authenticate a REST request: the `signature` parameter must be present
/// (-1102) and valid over `params.signed_payload()` (-1022).
pub fn verify_request(params: &Params, key: &SigningKey) -> Result<(), BinanceError> {
    let signature = params.required_str(super::params::SIGNATURE)?;
    key.verify(params.signed_payload(), signature)
}

/// The WebSocket API's signing payload: every param except `signature`,
/// sorted by name (byte order, as Python's `sorted`), as `name=value`
/// joined by `&`, values not percent-encoded. JSON strings are used as
/// they are, numbers and booleans as their JSON text (`5000`, `6000.346`,
/// `true`), null as `null`, arrays and objects as compact JSON.
pub fn ws_signing_payload(params: &serde_json::Map<String, serde_json::Value>) -> String {
    let texts: Vec<(&str, std::borrow::Cow<'_, str>)> = params
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                other => std::borrow::Cow::Owned(other.to_string()),
            };
            (k.as_str(), text)
        })
        .collect();
    let mut pairs: Vec<(&str, &str)> = texts.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    // Sorted explicitly: serde_json's map keeps insertion order when another
    // crate enables `preserve_order`.
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    ws_signing_payload_of(pairs.into_iter())
}

/// [`ws_signing_payload`] of `(name, text)` pairs already sorted by name.
pub fn ws_signing_payload_of<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> String {
    let pairs = pairs.filter(|(k, _)| *k != super::params::SIGNATURE);
    let mut out = String::with_capacity(pairs.clone().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Check the `X-MBX-APIKEY` header's shape before any lookup: present,
/// 1..=128 characters of `[A-Za-z0-9_-]` (Binance keys are 64
/// alphanumerics). -2014 "API-key format invalid." otherwise.
pub fn check_api_key_format(header: Option<&str>) -> Result<&str, BinanceError> {
    match header {
        Some(k)
            if !k.is_empty()
                && k.len() <= 128
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(k)
        }
        _ => Err(BinanceError::bad_api_key_format()),
    }
}

/// `recvWindow` in microseconds: Binance takes milliseconds with up to
/// three decimals (`6000.346`), default 5000, at most 60000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecvWindow {
    micros: u64,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow::DEFAULT
    }
}

impl RecvWindow {
    pub const DEFAULT: RecvWindow = RecvWindow { micros: 5_000_000 };
    pub const MAX: RecvWindow = RecvWindow { micros: 60_000_000 };
    /// Legal range quoted in the -1100 answer for a malformed recvWindow
    /// (our wording: Binance documents the form, not a regex).
    pub const LEGAL_RANGE: &'static str = "^[0-9]{1,20}(\\.[0-9]{1,3})?$";

    /// From whole milliseconds; -1131 above 60000.
    pub fn from_millis(ms: u64) -> Result<RecvWindow, BinanceError> {
        if ms > 60_000 {
            return Err(BinanceError::bad_recv_window());
        }
        Ok(RecvWindow { micros: ms * 1000 })
    }

    /// Parse the parameter's text: `5000`, `6000.346`; -1100 for other
    /// forms (signs, exponents, more than 3 decimals), -1131 above 60000.
    pub fn parse(text: &str) -> Result<RecvWindow, BinanceError> {
        let bad = || BinanceError::illegal_chars_in("recvWindow", RecvWindow::LEGAL_RANGE);
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || int_part.len() > 20 {
            return Err(bad());
        }
        let mut frac_micros = 0u64;
        if let Some(f) = frac_part {
            if !all_digits(f) || f.len() > 3 {
                return Err(bad());
            }
            for (i, b) in f.bytes().enumerate() {
                frac_micros += u64::from(b - b'0') * [100, 10, 1][i];
            }
        }
        // More than 20 digits was refused above; anything that overflows
        // u64 is far above the maximum anyway.
        let ms = int_part.parse::<u64>().unwrap_or(u64::MAX);
        if ms > 60_000 || (ms == 60_000 && frac_micros > 0) {
            return Err(BinanceError::bad_recv_window());
        }
        Ok(RecvWindow {
            micros: ms * 1000 + frac_micros,
        })
    }

    /// The window in microseconds.
    pub fn as_micros(self) -> u64 {
        self.micros
    }
}

/// Timestamps of 16 or more digits are microseconds, shorter ones
/// milliseconds (Binance accepts both; a millisecond timestamp reaches 16
/// digits only in the year 33658).
pub const MICROS_THRESHOLD: u64 = 1_000_000_000_000_000;

/// A client timestamp (ms or µs) in microseconds.
pub fn timestamp_micros(timestamp: u64) -> u64 {
    if timestamp >= MICROS_THRESHOLD {
        timestamp
    } else {
        // Below 10^15, so times 1000 stays below 10^18 < u64::MAX.
        timestamp * 1000
    }
}

/// Binance's timing rule: accept iff `timestamp < now + 1000 ms` and
/// `now - timestamp <= recvWindow` (default 5000 ms). A timestamp 1000 ms
/// or more ahead gets the "ahead of the server's time" -1021, a stale one
/// the "outside of the recvWindow" -1021.
pub fn check_timestamp(
    timestamp_ms_or_us: u64,
    recv_window: Option<RecvWindow>,
    now_ms: u64,
) -> Result<(), BinanceError> {
    let window = recv_window.unwrap_or_default();
    let ts_us = timestamp_micros(timestamp_ms_or_us);
    let now_us = now_ms.saturating_mul(1000);
    if ts_us >= now_us.saturating_add(1_000_000) {
        return Err(BinanceError::timestamp_ahead_of_server());
    }
    if now_us.saturating_sub(ts_us) > window.as_micros() {
        return Err(BinanceError::timestamp_outside_recv_window());
    }
    Ok(())
}

/// `check_timestamp` on a request's `timestamp` (mandatory, -1102) and
/// optional `recvWindow` parameters.
pub fn check_request_time(params: &Params, now_ms: u64) -> Result<(), BinanceError> {
    let timestamp = params.required_u64("timestamp")?;
    let recv_window = params
        .optional_str("recvWindow")?
        .map(RecvWindow::parse)
        .transpose()?;
    check_timestamp(timestamp, recv_window, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const DOC_PAYLOAD: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    const DOC_SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
    const DOC_ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAgmDRTtj2FA+wzJUIlAL9ly1eovjLBu7uXUFR+jFULmg=\n-----END PUBLIC KEY-----\n";

    fn test_signing_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    fn b64(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }

    fn pem_of(key: &VerifyingKey) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(key.as_bytes());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&der)
        )
    }

    proptest::proptest! {
        /// The server's check (ring) accepts exactly the tags the client
        /// side (RustCrypto) computes, for keys shorter and longer than a
        /// block (long keys are hashed first) and any payload; a tag with
        /// one flipped bit is refused.
        #[test]
        fn server_hmac_agrees_with_the_client_implementation(
            secret in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..150),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flip in 0usize..256,
        ) {
            let hex = hmac_sha256_hex(&secret, &payload);
            let key = SigningKey::hmac(&secret);
            proptest::prop_assert!(key.verify(&payload, &hex).is_ok());
            proptest::prop_assert!(key.verify(&payload, &hex.to_uppercase()).is_ok());
            let mut tag = decode_hex_32(&hex).unwrap();
            tag[flip / 8] ^= 1 << (flip % 8);
            let bad = hex_lower(&tag);
            proptest::prop_assert_eq!(
                key.verify(&payload, &bad).unwrap_err().code,
                BinanceError::invalid_signature().code
            );
        }
    }

    #[test]
    fn hmac_docs_test_vector() {
        let secret = DOC_SECRET.as_bytes();
        assert_eq!(
            hmac_sha256_hex(secret, DOC_PAYLOAD.as_bytes()),
            DOC_SIGNATURE
        );
        assert_eq!(
            verify_hmac_sha256(secret, DOC_PAYLOAD.as_bytes(), DOC_SIGNATURE),
            Ok(())
        );
        // Case-insensitive.
        let upper = DOC_SIGNATURE.to_ascii_uppercase();
        assert_eq!(
            verify_hmac_sha256(secret, DOC_PAYLOAD.as_bytes(), &upper),
            Ok(())
        );
        // The docs' non-ASCII example, signed over the percent-encoded form.
        let payload = "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            hmac_sha256_hex(secret, payload.as_bytes()),
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
    }

    #[test]
    fn hmac_rejects_everything_else() {
        let secret = DOC_SECRET.as_bytes();
        let payload = DOC_PAYLOAD.as_bytes();
        let mut flipped = DOC_SIGNATURE.to_owned();
        flipped.replace_range(0..1, "d");
        for sig in [
            "",
            "00",
            &flipped,
            &DOC_SIGNATURE[..63],
            &format!("{DOC_SIGNATURE}0"),
            &format!("{}g", &DOC_SIGNATURE[..63]),
            &format!(" {}", &DOC_SIGNATURE[1..]),
            "ｃ8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b7",
        ] {
            let e = verify_hmac_sha256(secret, payload, sig).unwrap_err();
            assert_eq!((e.code, e.http_status), (-1022, 400), "{sig}");
            assert_eq!(e.msg, "Signature for this request is not valid.");
        }
        assert!(verify_hmac_sha256(b"other", payload, DOC_SIGNATURE).is_err());
        assert!(verify_hmac_sha256(secret, b"symbol=LTCBTC", DOC_SIGNATURE).is_err());
        // Empty and very long secrets are still valid HMAC keys.
        let sig = hmac_sha256_hex(b"", b"x");
        assert_eq!(verify_hmac_sha256(b"", b"x", &sig), Ok(()));
        let long = vec![b'k'; 10_000];
        let sig = hmac_sha256_hex(&long, b"x");
        assert_eq!(verify_hmac_sha256(&long, b"x", &sig), Ok(()));
    }

    #[test]
    fn hex_digits_are_read_in_either_case_and_nothing_else() {
        for b in 0..=u8::MAX {
            let expected = char::from(b).to_digit(16).map(|d| d as u8);
            assert_eq!(hex_nibble(b), expected, "byte {b:#04x}");
        }
        assert_eq!(decode_hex_32(&"aB".repeat(32)), Some([0xab; 32]));
    }

    #[test]
    fn a_keyed_hmac_is_reused_across_requests() {
        let key = SigningKey::hmac(DOC_SECRET.as_bytes());
        for _ in 0..3 {
            assert_eq!(key.verify(DOC_PAYLOAD.as_bytes(), DOC_SIGNATURE), Ok(()));
            assert!(key.verify(b"symbol=LTCBTC", DOC_SIGNATURE).is_err());
        }
        let other = hmac_sha256_hex(b"other", DOC_PAYLOAD.as_bytes());
        assert!(key.verify(DOC_PAYLOAD.as_bytes(), &other).is_err());
    }

    #[test]
    fn verify_request_end_to_end_query_and_body() {
        let key = SigningKey::hmac(DOC_SECRET.as_bytes());
        let q = format!("{DOC_PAYLOAD}&signature={DOC_SIGNATURE}");
        let params = Params::parse(&q, b"").unwrap();
        assert_eq!(verify_request(&params, &key), Ok(()));
        // Parameters split across query and body, signature in the body:
        // the client signs query + body with no separator.
        let (query, body) = ("symbol=LTCBTC&side=BUY", "type=LIMIT&timestamp=1");
        let sig = hmac_sha256_hex(DOC_SECRET.as_bytes(), format!("{query}{body}").as_bytes());
        let body = format!("{body}&signature={sig}");
        let params = Params::parse(query, body.as_bytes()).unwrap();
        assert_eq!(verify_request(&params, &key), Ok(()));
        // Signature first, like a hand-written curl.
        let q = format!("signature={DOC_SIGNATURE}&{DOC_PAYLOAD}");
        assert_eq!(
            verify_request(&Params::parse(&q, b"").unwrap(), &key),
            Ok(())
        );
        // Missing signature is -1102, tampered payload -1022.
        let e = verify_request(&Params::parse(DOC_PAYLOAD, b"").unwrap(), &key).unwrap_err();
        assert_eq!(e.code, -1102);
        let tampered = q.replace("quantity=1", "quantity=2");
        let e = verify_request(&Params::parse(&tampered, b"").unwrap(), &key).unwrap_err();
        assert_eq!(e.code, -1022);
        assert_eq!(format!("{key:?}"), "SigningKey::Hmac(..)");
    }

    #[test]
    fn ed25519_round_trip_with_pem_and_percent_encoding() {
        let sk = test_signing_key();
        let vk = sk.verifying_key();
        let parsed = parse_ed25519_public_key(&pem_of(&vk)).unwrap();
        assert_eq!(parsed, vk);
        let payload = b"symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1&price=0.2&timestamp=1668481559918&recvWindow=5000";
        let sig = b64(&sk.sign(payload).to_bytes());
        assert_eq!(verify_ed25519(&vk, payload, &sig), Ok(()));
        // As it travels: percent-encoded in the query, decoded by Params.
        let encoded = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        let q = format!(
            "{}&signature={encoded}",
            std::str::from_utf8(payload).unwrap()
        );
        let params = Params::parse(&q, b"").unwrap();
        assert_eq!(params.signed_payload(), payload);
        let key = SigningKey::Ed25519(vk);
        assert_eq!(verify_request(&params, &key), Ok(()));
        assert!(format!("{key:?}").starts_with("SigningKey::Ed25519"));
        // Unencoded '+' became ' ' in form decoding: still accepted.
        let spaced = sig.replace('+', " ");
        assert_eq!(verify_ed25519(&vk, payload, &spaced), Ok(()));
        // Unpadded is fine too.
        assert_eq!(
            verify_ed25519(&vk, payload, sig.trim_end_matches('=')),
            Ok(())
        );
        // Case matters for base64.
        let lower = sig.to_ascii_lowercase();
        if lower != sig {
            assert_eq!(
                verify_ed25519(&vk, payload, &lower).unwrap_err().code,
                -1022
            );
        }
        // Wrong payload, wrong key, garbage.
        assert_eq!(verify_ed25519(&vk, b"x", &sig).unwrap_err().code, -1022);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert_eq!(
            verify_ed25519(&other, payload, &sig).unwrap_err().code,
            -1022
        );
        for bad in [
            "",
            "AAAA",
            "!!!!",
            &"A".repeat(300),
            &sig[..40],
            "é",
            &format!("{sig}AAAA"),
        ] {
            assert_eq!(
                verify_ed25519(&vk, payload, bad).unwrap_err().code,
                -1022,
                "{bad}"
            );
        }
    }

    #[test]
    fn ed25519_ws_payload_matches_rest_rules() {
        let sk = test_signing_key();
        let mut params = serde_json::Map::new();
        params.insert("timestamp".into(), serde_json::json!(1_645_423_376_532u64));
        params.insert("apiKey".into(), serde_json::json!("k"));
        let payload = ws_signing_payload(&params);
        assert_eq!(payload, "apiKey=k&timestamp=1645423376532");
        let sig = b64(&sk.sign(payload.as_bytes()).to_bytes());
        assert_eq!(
            verify_ed25519(&sk.verifying_key(), payload.as_bytes(), &sig),
            Ok(())
        );
    }

    #[test]
    fn public_key_forms() {
        let vk = test_signing_key().verifying_key();
        // Raw 32 bytes, bare SPKI base64, PEM with CRLF and indentation.
        assert_eq!(parse_ed25519_public_key(&b64(vk.as_bytes())), Ok(vk));
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(vk.as_bytes());
        assert_eq!(parse_ed25519_public_key(&b64(&der)), Ok(vk));
        let crlf = pem_of(&vk).replace('\n', "\r\n   ");
        assert_eq!(parse_ed25519_public_key(&crlf), Ok(vk));
        // The sample key from Binance's API key FAQ.
        let sample = parse_ed25519_public_key(DOC_ED25519_PEM).unwrap();
        assert_eq!(sample.as_bytes().len(), 32);

        assert_eq!(
            parse_ed25519_public_key(""),
            Err(PublicKeyError::NotEd25519)
        );
        assert_eq!(
            parse_ed25519_public_key("not base64!"),
            Err(PublicKeyError::Encoding)
        );
        assert_eq!(
            parse_ed25519_public_key(&"A".repeat(5000)),
            Err(PublicKeyError::Encoding)
        );
        // An RSA key (Binance FAQ's SPKI prefix) is not Ed25519.
        let rsa = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyfKiFXpcOhF5rX1XxePN\n-----END PUBLIC KEY-----";
        assert!(parse_ed25519_public_key(rsa).is_err());
        let private =
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----";
        assert_eq!(
            parse_ed25519_public_key(private),
            Err(PublicKeyError::NotEd25519)
        );
        let unterminated = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAgmDRTtj2FA+wzJUIlAL9ly1eovjLBu7uXUFR+jFULmg=";
        assert_eq!(
            parse_ed25519_public_key(unterminated),
            Err(PublicKeyError::Encoding)
        );
        // 44 bytes with a wrong OID.
        let mut wrong = der.clone();
        wrong[8] = 0x71; // 1.3.101.113 = Ed448
        assert_eq!(
            parse_ed25519_public_key(&b64(&wrong)),
            Err(PublicKeyError::NotEd25519)
        );
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            parse_ed25519_public_key(&b64(&identity)),
            Err(PublicKeyError::InvalidPoint)
        );
        assert!(!PublicKeyError::Encoding.to_string().is_empty());
    }

    #[test]
    fn ws_payload_docs_test_vector() {
        let params: serde_json::Value = serde_json::from_str(
            r#"{
                "symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                "quantity": "0.01000000", "price": "52000.00", "recvWindow": 100,
                "timestamp": 1645423376532,
                "apiKey": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
                "signature": "------ FILL ME ------"
            }"#,
        )
        .unwrap();
        let payload = ws_signing_payload(params.as_object().unwrap());
        assert_eq!(
            payload,
            "apiKey=vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
        );
        assert_eq!(
            hmac_sha256_hex(DOC_SECRET.as_bytes(), payload.as_bytes()),
            "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
        );
        // Non-ASCII values are signed as UTF-8, not percent-encoded.
        let params: serde_json::Value = serde_json::from_str(
            r#"{"symbol": "１２３４５６", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                "quantity": "1.00000000", "price": "0.10000000", "recvWindow": 5000,
                "timestamp": 1645423376532,
                "apiKey": "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"}"#,
        )
        .unwrap();
        let payload = ws_signing_payload(params.as_object().unwrap());
        assert_eq!(
            hmac_sha256_hex(DOC_SECRET.as_bytes(), payload.as_bytes()),
            "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"
        );
    }

    #[test]
    fn ws_payload_value_forms() {
        let params: serde_json::Value = serde_json::from_str(
            r#"{"b": true, "a": 6000.346, "C": null, "d": [1,"x"], "e": {"k": 1}, "signature": "s"}"#,
        )
        .unwrap();
        assert_eq!(
            ws_signing_payload(params.as_object().unwrap()),
            "C=null&a=6000.346&b=true&d=[1,\"x\"]&e={\"k\":1}"
        );
        assert_eq!(ws_signing_payload(&serde_json::Map::new()), "");
    }

    #[test]
    fn api_key_format() {
        let k = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
        assert_eq!(check_api_key_format(Some(k)), Ok(k));
        assert!(check_api_key_format(Some("abc_DEF-123")).is_ok());
        for bad in [None, Some(""), Some("a b"), Some("ключ"), Some("a\u{0}")] {
            let e = check_api_key_format(bad).unwrap_err();
            assert_eq!((e.code, e.http_status), (-2014, 401));
            assert_eq!(e.msg, "API-key format invalid.");
        }
        let long = "a".repeat(129);
        assert!(check_api_key_format(Some(&long)).is_err());
    }

    #[test]
    fn recv_window_parsing() {
        assert_eq!(RecvWindow::parse("5000").unwrap().as_micros(), 5_000_000);
        assert_eq!(
            RecvWindow::parse("6000.346").unwrap().as_micros(),
            6_000_346
        );
        assert_eq!(RecvWindow::parse("0.5").unwrap().as_micros(), 500);
        assert_eq!(RecvWindow::parse("0.05").unwrap().as_micros(), 50);
        assert_eq!(RecvWindow::parse("0").unwrap().as_micros(), 0);
        assert_eq!(RecvWindow::parse("60000").unwrap(), RecvWindow::MAX);
        assert_eq!(RecvWindow::parse("60000.000").unwrap(), RecvWindow::MAX);
        assert_eq!(RecvWindow::default(), RecvWindow::DEFAULT);
        for over in ["60000.001", "60001", "100000", "99999999999999999999"] {
            let e = RecvWindow::parse(over).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (-1131, "'recvWindow' must be less than 60000."),
                "{over}"
            );
        }
        for bad in [
            "",
            "-1",
            "+5",
            "5e3",
            "5000.1234",
            "5000.",
            ".5",
            "NaN",
            "5 000",
            "１",
            "123456789012345678901",
        ] {
            let e = RecvWindow::parse(bad).unwrap_err();
            assert_eq!(e.code, -1100, "{bad}");
        }
        assert_eq!(RecvWindow::from_millis(60_000), Ok(RecvWindow::MAX));
        assert_eq!(RecvWindow::from_millis(60_001).unwrap_err().code, -1131);
    }

    #[test]
    fn timing_rule() {
        let now = 1_700_000_000_000u64;
        let ok = |ts: u64, rw: Option<RecvWindow>| check_timestamp(ts, rw, now);
        assert_eq!(ok(now, None), Ok(()));
        assert_eq!(ok(now - 5000, None), Ok(()));
        assert_eq!(ok(now + 999, None), Ok(()));
        let e = ok(now + 1000, None).unwrap_err();
        assert_eq!(
            e.msg,
            "Timestamp for this request was 1000ms ahead of the server's time."
        );
        assert_eq!((e.code, e.http_status), (-1021, 400));
        let e = ok(now - 5001, None).unwrap_err();
        assert_eq!(
            e.msg,
            "Timestamp for this request is outside of the recvWindow."
        );
        let rw = RecvWindow::from_millis(60_000).ok();
        assert_eq!(ok(now - 60_000, rw), Ok(()));
        assert!(ok(now - 60_001, rw).is_err());
        let zero = RecvWindow::from_millis(0).ok();
        assert_eq!(ok(now, zero), Ok(()));
        assert_eq!(ok(now + 500, zero), Ok(()));
        assert!(ok(now - 1, zero).is_err());
        // Microseconds (16 digits), with sub-millisecond recvWindow.
        let now_us = now * 1000;
        assert_eq!(ok(now_us, None), Ok(()));
        assert_eq!(ok(now_us + 999_999, None), Ok(()));
        assert!(ok(now_us + 1_000_000, None).is_err());
        let fine = RecvWindow::parse("0.5").ok();
        assert_eq!(ok(now_us - 500, fine), Ok(()));
        assert!(ok(now_us - 501, fine).is_err());
        // Absurd values never panic.
        assert_eq!(
            ok(u64::MAX, None).unwrap_err().msg,
            "Timestamp for this request was 1000ms ahead of the server's time."
        );
        assert_eq!(ok(9_223_372_036_854_775_807, None).unwrap_err().code, -1021);
        assert!(ok(0, None).is_err());
        assert!(check_timestamp(0, None, u64::MAX).is_err());
        assert!(check_timestamp(u64::MAX, None, u64::MAX).is_err());
        assert_eq!(timestamp_micros(1), 1000);
        assert_eq!(timestamp_micros(MICROS_THRESHOLD), MICROS_THRESHOLD);
        assert_eq!(
            timestamp_micros(MICROS_THRESHOLD - 1),
            (MICROS_THRESHOLD - 1) * 1000
        );
    }

    #[test]
    fn request_time_from_params() {
        let now = 1_499_827_319_559u64;
        let p = |q: &str| Params::parse(q, b"").unwrap();
        assert_eq!(
            check_request_time(&p("timestamp=1499827319559&recvWindow=5000"), now),
            Ok(())
        );
        assert_eq!(
            check_request_time(&p("timestamp=1499827319559"), now + 5000),
            Ok(())
        );
        assert_eq!(
            check_request_time(&p("timestamp=1499827319559"), now + 5001)
                .unwrap_err()
                .code,
            -1021
        );
        assert_eq!(
            check_request_time(&p("recvWindow=5000"), now)
                .unwrap_err()
                .code,
            -1102
        );
        assert_eq!(
            check_request_time(&p("timestamp="), now).unwrap_err().code,
            -1105
        );
        assert_eq!(
            check_request_time(&p("timestamp=abc"), now)
                .unwrap_err()
                .code,
            -1100
        );
        assert_eq!(
            check_request_time(&p("timestamp=1&recvWindow=70000"), now)
                .unwrap_err()
                .code,
            -1131
        );
        assert_eq!(
            check_request_time(&p("timestamp=1&recvWindow="), now)
                .unwrap_err()
                .code,
            -1105
        );
        assert_eq!(
            check_request_time(
                &p("timestamp=1499827319559000&recvWindow=10000.5"),
                now + 10_000
            ),
            Ok(())
        );
    }
}
