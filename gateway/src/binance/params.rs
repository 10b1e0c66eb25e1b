//! Request parameters the way Binance reads them: from the raw query string
//! and the raw request body, both `application/x-www-form-urlencoded`.
//!
//! Decisions (rest-api.md "General Information on Endpoints" plus what real
//! Binance answers where the docs are silent):
//! * Parameters may come in the query, the body, or both. A name present in
//!   both takes the query's value; the body's pair is ignored (but stays in
//!   the signed payload, since the client signed it).
//! * The same name twice within the query (or twice within the body) is
//!   -1101 "Duplicate values for a parameter detected.".
//! * The body is always read as form-urlencoded, whatever `Content-Type`
//!   says (the SDKs send `application/json` on bodiless requests). A JSON
//!   body is therefore not silently ignored: its first "name" contains
//!   `{`/`"` and the request fails with -1100.
//! * `+` decodes to a space, `%XX` to a byte; a malformed escape or bytes
//!   that are not UTF-8 after decoding are -1100. Names must be
//!   `[A-Za-z0-9_]{1,64}`; values may hold any Unicode (symbols can be
//!   non-ASCII) but no control characters (-1100) and at most
//!   `MAX_VALUE_BYTES` bytes (-1100).
//! * Empty segments (`a=1&&b=2`, a trailing `&`) are skipped. `name=` and a
//!   bare `name` are present-but-empty: getters answer -1105 "Parameter '%s'
//!   was empty." for them, -1102 when the name is absent.
//! * More than `MAX_PARAMS` pairs is -1101; query plus body longer than
//!   `MAX_INPUT_BYTES` is HTTP 413.
//!
//! Invariants: parsing is linear in the input, allocates at most
//! `MAX_PARAMS` entries, never panics, and every failure is a
//! `BinanceError` from the contract. `signed_payload()` is byte-for-byte
//! the raw query followed by the raw body, with each `signature` pair and
//! one `&` next to it removed, exactly what clients sign.

use super::errors::{
    BinanceError, LEGAL_RANGE_CLIENT_ORDER_ID, LEGAL_RANGE_DECIMAL, LEGAL_RANGE_INTEGER,
};
use super::sign::hex_nibble;

/// At most this many `name=value` pairs per request (query and body together).
pub const MAX_PARAMS: usize = 64;
/// Longest accepted parameter name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest accepted decoded value, in bytes (room for a `symbols` list).
pub const MAX_VALUE_BYTES: usize = 4096;
/// Longest accepted raw query plus raw body, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Name of the signature parameter, which `signed_payload` leaves out.
pub const SIGNATURE: &str = "signature";

/// What a member of a WebSocket API request's `params` object held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `null`: counts as not sent (but is signed as `null`).
    Null,
    /// A JSON string, kept unescaped.
    Str,
    /// Any other value, kept as its compact JSON text: numbers, booleans,
    /// arrays and objects.
    Json,
}

/// Byte range of a name or value in a request's text buffer.
type Span = (usize, usize);

#[derive(Debug, Clone, Copy)]
struct Member {
    name: Span,
    value: Span,
    kind: ValueKind,
    /// The name's first 8 bytes, big-endian, zero-padded: ordering by it
    /// first orders by name wherever it differs (see [`name_key`]).
    key: u64,
}

/// `name`'s first 8 bytes as a big-endian number, zero-padded. If
/// `name_key(a) < name_key(b)` then `a < b` as byte strings (at the first
/// differing byte either both are real bytes, or the shorter name has run
/// out and the other's byte is above zero); equal keys say nothing.
fn name_key(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = name.len().min(8);
    k[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(k)
}

/// The members of a WebSocket API request's `params` object, every name
/// and value text in one buffer (a request is a few allocations, not two
/// per member). Values read as the WebSocket signing payload renders them:
/// strings unescaped, `null` as `null`, anything else as compact JSON.
#[derive(Debug, Clone, Default)]
pub struct Members {
    text: String,
    items: Vec<Member>,
}

impl Members {
    /// Room for `members` members whose names and values take about
    /// `text_bytes` bytes together.
    pub fn with_capacity(text_bytes: usize, members: usize) -> Members {
        Members {
            text: String::with_capacity(text_bytes),
            items: Vec::with_capacity(members),
        }
    }

    /// Append a member (in frame order; [`Members::sort`] orders them).
    pub fn push(&mut self, name: &str, kind: ValueKind, value: &str) {
        self.push_with(name, kind, |text| text.push_str(value));
    }

    /// Append a member whose value text is its `Display` form (numbers).
    pub fn push_display(&mut self, name: &str, kind: ValueKind, value: impl std::fmt::Display) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        self.push_with(name, kind, |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn push_with(&mut self, name: &str, kind: ValueKind, write: impl FnOnce(&mut String)) {
        let n = self.text.len();
        self.text.push_str(name);
        let v = self.text.len();
        write(&mut self.text);
        self.items.push(Member {
            name: (n, v),
            value: (v, self.text.len()),
            kind,
            key: name_key(name.as_bytes()),
        });
    }

    /// Order the members by name; false when a name occurs twice.
    pub fn sort(&mut self) -> bool {
        let Members { text, items } = self;
        let name = |m: &Member| bytes(text, m.name);
        items.sort_unstable_by(|a, b| a.key.cmp(&b.key).then_with(|| name(a).cmp(name(b))));
        !items
            .windows(2)
            .any(|w| w[0].key == w[1].key && name(&w[0]) == name(&w[1]))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `(name, kind, value text)` in the current order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, ValueKind, &str)> + Clone {
        self.items.iter().map(|m| {
            (
                &self.text[m.name.0..m.name.1],
                m.kind,
                &self.text[m.value.0..m.value.1],
            )
        })
    }
}

/// Equal when the same members come in the same order (wherever their text
/// sits in the buffer).
impl PartialEq for Members {
    fn eq(&self, other: &Members) -> bool {
        self.iter().eq(other.iter())
    }
}

/// A `params` object as sorted, unique members.
pub fn json_members(obj: serde_json::Map<String, serde_json::Value>) -> Members {
    let mut members = Members::with_capacity(0, obj.len());
    for (name, value) in &obj {
        match value {
            serde_json::Value::Null => members.push(name, ValueKind::Null, "null"),
            serde_json::Value::String(s) => members.push(name, ValueKind::Str, s),
            other => members.push_display(name, ValueKind::Json, other),
        }
    }
    // Sorted explicitly: serde_json's map keeps insertion order when another
    // crate enables `preserve_order`. Its keys are unique.
    members.sort();
    members
}

/// Where a parameter was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Query,
    Body,
}

/// Laid out like [`Member`] (same size and alignment), so the WebSocket
/// path turns its members into entries in their own allocation.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: Span,
    value: Span,
    source: Source,
    /// [`name_key`] of the name: a look-up compares it before the text.
    key: u64,
}

const _: () = assert!(
    std::mem::size_of::<Entry>() == std::mem::size_of::<Member>()
        && std::mem::align_of::<Entry>() == std::mem::align_of::<Member>()
);

/// The decoded parameters of one request plus the payload its signature
/// covers.
#[derive(Debug, Clone)]
pub struct Params {
    /// Every decoded name and value; entries point into it.
    text: String,
    /// Effective parameters: query pairs first, then body pairs whose name
    /// the query does not have. Names are unique.
    entries: Vec<Entry>,
    signed_payload: String,
    /// A WebSocket request's `apiKey` (in `text`), which is not a parameter.
    api_key: Option<Span>,
}

impl Params {
    /// Parse a request's raw query string (without the leading `?`) and raw
    /// body.
    pub fn parse(query: &str, body: &[u8]) -> Result<Params, BinanceError> {
        if query.len().saturating_add(body.len()) > MAX_INPUT_BYTES {
            return Err(BinanceError::payload_too_large());
        }
        let body = std::str::from_utf8(body).map_err(|_| BinanceError::illegal_chars())?;

        // Decoding never grows a component: the raw length is room enough.
        let mut text = String::with_capacity(query.len() + body.len());
        let mut entries: Vec<Entry> = Vec::new();
        let mut pairs_seen = 0usize;

        let query_pairs = decode_pairs(query, &mut text, &mut pairs_seen)?;
        for (name, value) in query_pairs {
            if entries
                .iter()
                .any(|e| bytes(&text, e.name) == bytes(&text, name))
            {
                return Err(BinanceError::duplicate_parameter());
            }
            entries.push(Entry {
                name,
                value,
                source: Source::Query,
                key: name_key(bytes(&text, name)),
            });
        }
        let body_pairs = decode_pairs(body, &mut text, &mut pairs_seen)?;
        for (i, &(name, value)) in body_pairs.iter().enumerate() {
            let name_text = bytes(&text, name);
            if body_pairs[..i]
                .iter()
                .any(|&(n, _)| bytes(&text, n) == name_text)
            {
                return Err(BinanceError::duplicate_parameter());
            }
            // The query wins (rest-api.md); the body's pair is dropped.
            if entries.iter().any(|e| bytes(&text, e.name) == name_text) {
                continue;
            }
            entries.push(Entry {
                name,
                value,
                source: Source::Body,
                key: name_key(name_text),
            });
        }

        let mut signed_payload = String::with_capacity(query.len() + body.len());
        push_without_signature(&mut signed_payload, query);
        push_without_signature(&mut signed_payload, body);
        Ok(Params {
            text,
            entries,
            signed_payload,
            api_key: None,
        })
    }

    /// The `params` object of a WebSocket API request. Values are text as
    /// the WebSocket signing payload renders them (strings as they are,
    /// numbers and booleans as their JSON text, arrays and objects as
    /// compact JSON); `null` values count as not sent. `apiKey` is kept
    /// apart ([`Params::api_key`]), not as a parameter, and `returnRateLimits` is left to the
    /// session; the signed payload is every pair but
    /// `signature`, sorted by name (web-socket-api.md), `apiKey` included.
    /// `members` are sorted by name, names unique (as [`json_members`]
    /// and the WebSocket decoder give them). The members' text buffer
    /// becomes the parameters' own.
    pub fn from_json(members: Members) -> Result<Params, BinanceError> {
        if members.len() > MAX_PARAMS {
            return Err(BinanceError::too_many_parameters());
        }
        // Only signed requests need the payload (public methods skip it).
        let signed_payload = if members.iter().any(|(k, _, _)| k == SIGNATURE) {
            super::sign::ws_signing_payload_of(members.iter().map(|(k, _, v)| (k, v)))
        } else {
            String::new()
        };
        let mut api_key = None;
        for m in &members.items {
            let name = span(&members.text, m.name);
            if !is_param_name(name) {
                return Err(BinanceError::illegal_chars());
            }
            if m.kind == ValueKind::Null {
                continue;
            }
            let value = span(&members.text, m.value);
            if value.len() > MAX_VALUE_BYTES {
                return Err(BinanceError::illegal_chars_in(
                    name,
                    "value of at most 4096 bytes",
                ));
            }
            if has_control(value) {
                return Err(BinanceError::illegal_chars());
            }
            if name == "apiKey" {
                api_key = Some(m.value);
            }
        }
        let Members { text, items } = members;
        // Every member but nulls, `apiKey` and `returnRateLimits` (read by
        // the WebSocket session itself). Collected in place: `Entry` has
        // `Member`'s layout.
        let entries: Vec<Entry> = items
            .into_iter()
            .filter(|m| {
                m.kind != ValueKind::Null && {
                    let name = span(&text, m.name);
                    name != "apiKey" && name != "returnRateLimits"
                }
            })
            .map(|m| Entry {
                name: m.name,
                value: m.value,
                source: Source::Body,
                key: m.key,
            })
            .collect();
        Ok(Params {
            text,
            entries,
            signed_payload,
            api_key,
        })
    }

    /// The `apiKey` member of a WebSocket request (never set on REST, where
    /// the key is a header).
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.map(|k| span(&self.text, k))
    }

    /// Exactly the bytes the request's signature must cover: raw query +
    /// raw body, `signature` pairs removed.
    pub fn signed_payload(&self) -> &[u8] {
        self.signed_payload.as_bytes()
    }

    /// The `signature` value, if one was sent (the query's when both have
    /// one).
    pub fn signature(&self) -> Option<&str> {
        self.get(SIGNATURE)
    }

    /// Number of distinct parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(name, value)` pairs, query first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (span(&self.text, e.name), span(&self.text, e.value)))
    }

    /// The raw decoded value, empty values included.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entry(name).map(|e| span(&self.text, e.value))
    }

    /// True when `name` was sent (possibly empty).
    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Where `name` was read from.
    pub fn source_of(&self, name: &str) -> Option<Source> {
        self.entry(name).map(|e| e.source)
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        let key = name_key(name.as_bytes());
        self.entries
            .iter()
            .find(|e| e.key == key && bytes(&self.text, e.name) == name.as_bytes())
    }

    /// A mandatory string: -1102 when absent, -1105 when empty.
    pub fn required_str(&self, name: &str) -> Result<&str, BinanceError> {
        self.optional_str(name)?
            .ok_or_else(|| BinanceError::mandatory_param_missing(name))
    }

    /// An optional string: `None` when absent, -1105 when sent empty.
    pub fn optional_str(&self, name: &str) -> Result<Option<&str>, BinanceError> {
        match self.get(name) {
            None => Ok(None),
            Some("") => Err(BinanceError::param_empty(name)),
            Some(v) => Ok(Some(v)),
        }
    }

    /// A mandatory unsigned integer (`^[0-9]{1,20}$`): -1100 for anything
    /// else (signs, blanks, decimals, exponents), -1108 above u64::MAX.
    pub fn required_u64(&self, name: &str) -> Result<u64, BinanceError> {
        parse_u64(name, self.required_str(name)?)
    }

    /// An optional unsigned integer, checked like `required_u64`.
    pub fn optional_u64(&self, name: &str) -> Result<Option<u64>, BinanceError> {
        self.optional_str(name)?
            .map(|v| parse_u64(name, v))
            .transpose()
    }

    /// An optional value that must be one of `allowed` (exact,
    /// case-sensitive): -1130 otherwise. Typed enums with a dedicated
    /// Binance code (side, type, timeInForce, interval) live in `enums`.
    pub fn enum_of<'a>(
        &self,
        name: &str,
        allowed: &[&'a str],
    ) -> Result<Option<&'a str>, BinanceError> {
        match self.optional_str(name)? {
            None => Ok(None),
            Some(v) => allowed
                .iter()
                .find(|a| **a == v)
                .copied()
                .map(Some)
                .ok_or_else(|| BinanceError::invalid_parameter(name)),
        }
    }

    /// An optional `true`/`false` (ASCII case-insensitive): -1130 otherwise.
    pub fn optional_bool(&self, name: &str) -> Result<Option<bool>, BinanceError> {
        match self.optional_str(name)? {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(BinanceError::invalid_parameter(name)),
        }
    }

    /// A mandatory decimal, returned raw for the engine to convert exactly.
    /// Only the syntax is checked here (see `is_decimal_syntax`); the value
    /// (negative, on the grid, in range) is the engine's business.
    pub fn decimal_str(&self, name: &str) -> Result<&str, BinanceError> {
        check_decimal(name, self.required_str(name)?)
    }

    /// An optional decimal, checked like `decimal_str`.
    pub fn optional_decimal_str(&self, name: &str) -> Result<Option<&str>, BinanceError> {
        self.optional_str(name)?
            .map(|v| check_decimal(name, v))
            .transpose()
    }

    /// An optional client order id (`newClientOrderId`,
    /// `origClientOrderId`, ...): -1100 with Binance's legal range when it
    /// is longer than 36 or has other characters than `.A-Z:/a-z0-9_-`.
    pub fn optional_client_order_id(&self, name: &str) -> Result<Option<&str>, BinanceError> {
        match self.optional_str(name)? {
            None => Ok(None),
            Some(v) if is_client_order_id(v) => Ok(Some(v)),
            Some(_) => Err(BinanceError::illegal_chars_in(
                name,
                LEGAL_RANGE_CLIENT_ORDER_ID,
            )),
        }
    }

    /// -1106 "Parameter '%s' sent when not required." if `name` was sent.
    pub fn reject_if_sent(&self, name: &str) -> Result<(), BinanceError> {
        if self.contains(name) {
            Err(BinanceError::param_not_required(name))
        } else {
            Ok(())
        }
    }

    /// Reject parameters the endpoint does not read. Binance's REST API
    /// answers this with -1104 "Not all sent parameters were read; read '%s'
    /// parameter(s) but was sent '%s'." (not -1103, which only the WebSocket
    /// API uses), counting every distinct parameter including `signature`
    /// and `timestamp`, so `allowed` must list those for signed endpoints.
    pub fn check_unknown(&self, allowed: &[&str]) -> Result<(), BinanceError> {
        let read = self
            .entries
            .iter()
            .filter(|e| allowed.contains(&span(&self.text, e.name)))
            .count();
        if read == self.entries.len() {
            Ok(())
        } else {
            Err(BinanceError::unread_parameters(read, self.entries.len()))
        }
    }
}

fn parse_u64(name: &str, v: &str) -> Result<u64, BinanceError> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BinanceError::illegal_chars_in(name, LEGAL_RANGE_INTEGER));
    }
    v.parse::<u64>()
        .map_err(|_| BinanceError::param_overflow(name))
}

fn check_decimal<'a>(name: &str, v: &'a str) -> Result<&'a str, BinanceError> {
    if is_decimal_syntax(v) {
        Ok(v)
    } else {
        Err(BinanceError::illegal_chars_in(name, LEGAL_RANGE_DECIMAL))
    }
}

/// True for the decimal forms real clients send: Binance's own
/// `^([0-9]{1,20})(\.[0-9]{1,20})?$` plus what the engine's converter also
/// takes, a leading `+`, `.5`, `5.` and Python's exponent form (`1e-05`).
/// At most 20 digits before and 20 after the point, an exponent of at most
/// 3 digits; no sign other than `+`, no blanks, no NaN or infinity.
pub fn is_decimal_syntax(v: &str) -> bool {
    let s = v.strip_prefix('+').unwrap_or(v);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    let digits = |p: &str, max: usize| p.len() <= max && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int_part, 20) || !digits(frac_part, 20) {
        return false;
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return false;
    }
    match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && digits(e, 3)
        }
    }
}

fn is_client_order_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 36
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'))
}

/// The text of `span` in `text`.
fn span(text: &str, (start, end): Span) -> &str {
    &text[start..end]
}

/// The bytes of `span` in `text`: for comparing names (the same order and
/// equality as the text, without `str` slicing's boundary checks).
fn bytes(text: &str, (start, end): Span) -> &[u8] {
    &text.as_bytes()[start..end]
}

/// Split `raw` on `&`, decode each non-empty `name[=value]` onto the end
/// of `text` (answering where each name and value landed), and count the
/// pairs into `pairs_seen` (shared by query and body) against `MAX_PARAMS`.
fn decode_pairs(
    raw: &str,
    text: &mut String,
    pairs_seen: &mut usize,
) -> Result<Vec<(Span, Span)>, BinanceError> {
    let mut out = Vec::new();
    for segment in raw.split('&') {
        if segment.is_empty() {
            continue;
        }
        *pairs_seen += 1;
        if *pairs_seen > MAX_PARAMS {
            return Err(BinanceError::too_many_parameters());
        }
        let (raw_name, raw_value) = match segment.find('=') {
            Some(i) => (&segment[..i], &segment[i + 1..]),
            None => (segment, ""),
        };
        // Bound the work before decoding: decoding never grows a string.
        if raw_name.len() > 3 * MAX_NAME_BYTES {
            return Err(BinanceError::illegal_chars());
        }
        let n = text.len();
        if !decode_component_into(raw_name, text) {
            return Err(BinanceError::illegal_chars());
        }
        let name = (n, text.len());
        if !is_param_name(span(text, name)) {
            return Err(BinanceError::illegal_chars());
        }
        let too_long = |text: &str| {
            BinanceError::illegal_chars_in(span(text, name), "value of at most 4096 bytes")
        };
        if raw_value.len() > 3 * MAX_VALUE_BYTES {
            return Err(too_long(text));
        }
        let v = text.len();
        if !decode_component_into(raw_value, text) {
            return Err(BinanceError::illegal_chars());
        }
        let value = (v, text.len());
        if value.1 - value.0 > MAX_VALUE_BYTES {
            return Err(too_long(text));
        }
        if has_control(span(text, value)) {
            return Err(BinanceError::illegal_chars());
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Whether `s` holds a control character (`char::is_control`: U+0000-U+001F
/// and U+007F-U+009F). One pass over the bytes for the usual printable
/// ASCII; character by character only when a byte is not.
fn has_control(s: &str) -> bool {
    // A fold without an early exit, so the common all-printable-ASCII
    // check runs over whole vectors (values are API keys and signatures of
    // 64 bytes); only text with other bytes looks at its chars.
    s.bytes()
        .fold(false, |any, b| any | !(0x20..0x7f).contains(&b))
        && s.chars().any(char::is_control)
}

fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().fold(true, |all, b| {
            all & (b.is_ascii_alphanumeric() | (b == b'_'))
        })
}

/// Form-urlencoded decoding: `+` is a space, `%XX` a byte. `None` for a
/// malformed escape or a result that is not UTF-8.
fn decode_component(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let bytes = raw.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'%' | b'+')) {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_nibble(*bytes.get(i + 1)?)?;
                let lo = hex_nibble(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

/// [`decode_component`] appended to `out`; false (and `out` unchanged)
/// where it answers `None`.
fn decode_component_into(raw: &str, out: &mut String) -> bool {
    match decode_component(raw) {
        Some(decoded) => {
            out.push_str(&decoded);
            true
        }
        None => false,
    }
}

/// True when a raw `name[=value]` segment names the signature parameter
/// (decoded, so `sig%6Eature=` counts too).
fn is_signature_segment(segment: &str) -> bool {
    let raw_name = segment.split('=').next().unwrap_or("");
    raw_name == SIGNATURE || decode_component(raw_name).is_some_and(|n| n == SIGNATURE)
}

/// Append `raw` to `out` without its `signature` segments: the segments are
/// re-joined with `&` in their original order and bytes, so dropping
/// `&signature=..` at the end, `signature=..&` at the start or one in the
/// middle leaves exactly the string the client signed.
fn push_without_signature(out: &mut String, raw: &str) {
    if !raw.contains("signature") && !raw.contains('%') {
        out.push_str(raw);
        return;
    }
    let mut first = true;
    for segment in raw.split('&') {
        if !segment.is_empty() && is_signature_segment(segment) {
            continue;
        }
        if !first {
            out.push('&');
        }
        out.push_str(segment);
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(query: &str, body: &str) -> Params {
        Params::parse(query, body.as_bytes()).expect("parses")
    }

    fn err(query: &str, body: &[u8]) -> BinanceError {
        Params::parse(query, body).expect_err("fails")
    }

    proptest! {
        #[test]
        fn has_control_is_char_is_control(s in "\\PC*|[\\x00-\\x{a0}]{0,12}|.{0,12}") {
            prop_assert_eq!(has_control(&s), s.chars().any(char::is_control));
        }

        #[test]
        fn members_sort_by_name_bytes(names in prop::collection::vec("[a-c\\x00\u{e9}]{0,10}", 0..12)) {
            let mut m = Members::default();
            for n in &names {
                m.push(n, ValueKind::Str, "v");
            }
            let unique = m.sort();
            let got: Vec<&[u8]> = m.items.iter().map(|i| bytes(&m.text, i.name)).collect();
            let mut want: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            want.sort();
            prop_assert_eq!(&got, &want);
            want.dedup();
            prop_assert_eq!(unique, want.len() == names.len());
        }
    }

    #[test]
    fn has_control_sees_c0_del_and_c1() {
        for c in ['\0', '\n', '\x1f', '\x7f', '\u{80}', '\u{9f}'] {
            assert!(has_control(&format!("ab{c}cd")), "{c:?}");
        }
        for s in ["", "BTCUSDT", "0.001", "é ü 中 \u{a0}", "~!@#"] {
            assert!(!has_control(s), "{s:?}");
        }
    }

    #[test]
    fn query_only_like_binance_connector() {
        let q = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=31000.0&timestamp=1&signature=abc";
        let ps = p(q, "");
        assert_eq!(ps.get("symbol"), Some("BTCUSDT"));
        assert_eq!(ps.signature(), Some("abc"));
        assert_eq!(ps.len(), 8);
        assert!(!ps.is_empty());
        assert_eq!(
            ps.signed_payload(),
            b"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=31000.0&timestamp=1"
        );
        assert_eq!(ps.source_of("symbol"), Some(Source::Query));
    }

    #[test]
    fn body_only_like_ccxt_and_python_binance() {
        let body = "timestamp=1499827319559&recvWindow=10000&symbol=BTCUSDT&signature=deadbeef";
        let ps = p("", body);
        assert_eq!(ps.required_u64("timestamp"), Ok(1_499_827_319_559));
        assert_eq!(ps.source_of("recvWindow"), Some(Source::Body));
        assert_eq!(
            ps.signed_payload(),
            b"timestamp=1499827319559&recvWindow=10000&symbol=BTCUSDT"
        );
    }

    #[test]
    fn mixed_query_and_body_concatenate_without_separator() {
        let ps = p("symbol=LTCBTC&side=BUY", "type=LIMIT&signature=x");
        assert_eq!(ps.signed_payload(), b"symbol=LTCBTC&side=BUYtype=LIMIT");
        let ps = p("symbol=LTCBTC&signature=x", "type=LIMIT");
        assert_eq!(ps.signed_payload(), b"symbol=LTCBTCtype=LIMIT");
    }

    #[test]
    fn signature_anywhere_is_removed_with_one_separator() {
        assert_eq!(p("signature=x&a=1&b=2", "").signed_payload(), b"a=1&b=2");
        assert_eq!(p("a=1&signature=x&b=2", "").signed_payload(), b"a=1&b=2");
        assert_eq!(p("a=1&b=2&signature=x", "").signed_payload(), b"a=1&b=2");
        assert_eq!(p("signature=x", "").signed_payload(), b"");
        assert_eq!(p("", "a=1&signature=x&b=2").signed_payload(), b"a=1&b=2");
        // Encoded name is still the signature parameter.
        assert_eq!(p("a=1&sig%6Eature=x", "").signed_payload(), b"a=1");
        // Similar names are not.
        assert_eq!(
            p("a=1&signatures=x", "").signed_payload(),
            b"a=1&signatures=x"
        );
        assert_eq!(p("xsignature=1", "").signed_payload(), b"xsignature=1");
        // Empty segments survive byte for byte.
        assert_eq!(p("a=1&&signature=x", "").signed_payload(), b"a=1&");
    }

    #[test]
    fn signature_in_query_and_body() {
        let ps = p("a=1&signature=q", "b=2&signature=b");
        assert_eq!(ps.signature(), Some("q"));
        assert_eq!(ps.signed_payload(), b"a=1b=2");
    }

    #[test]
    fn query_wins_over_body() {
        let ps = p("symbol=BTCUSDT", "symbol=ETHUSDT&side=SELL");
        assert_eq!(ps.get("symbol"), Some("BTCUSDT"));
        assert_eq!(ps.source_of("symbol"), Some(Source::Query));
        assert_eq!(ps.len(), 2);
        // The shadowed body pair is still signed.
        assert_eq!(
            ps.signed_payload(),
            b"symbol=BTCUSDTsymbol=ETHUSDT&side=SELL"
        );
        // and does not count as unread.
        assert_eq!(ps.check_unknown(&["symbol", "side"]), Ok(()));
    }

    #[test]
    fn duplicates_within_one_source() {
        let e = err("symbol=A&symbol=B", b"");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1101, "Duplicate values for a parameter detected.")
        );
        assert_eq!(err("", b"a=1&a=1").code, -1101);
        // Same name after decoding.
        assert_eq!(err("symbol=A&sym%62ol=B", b"").code, -1101);
        assert_eq!(err("a=1&a", b"").code, -1101);
    }

    #[test]
    fn percent_and_plus_decoding() {
        let ps = p(
            "symbol=%EF%BC%91%EF%BC%92%EF%BC%93&c=a+b&d=%2B&e=%5B%22BTCUSDT%22,%22BNBBTC%22%5D&f=%e2%82%ac",
            "",
        );
        assert_eq!(ps.get("symbol"), Some("１２３"));
        assert_eq!(ps.get("c"), Some("a b"));
        assert_eq!(ps.get("d"), Some("+"));
        assert_eq!(ps.get("e"), Some("[\"BTCUSDT\",\"BNBBTC\"]"));
        assert_eq!(ps.get("f"), Some("€"));
        // Raw (unencoded) JSON arrays and raw unicode are accepted too.
        let ps = p("symbols=[\"BTCUSDT\",\"BNBBTC\"]&s=１２３", "");
        assert_eq!(ps.get("symbols"), Some("[\"BTCUSDT\",\"BNBBTC\"]"));
        assert_eq!(ps.get("s"), Some("１２３"));
        // The signed payload keeps the raw bytes, escapes and all.
        assert_eq!(
            p("symbol=%EF%BC%91&signature=x", "").signed_payload(),
            b"symbol=%EF%BC%91"
        );
    }

    #[test]
    fn malformed_escapes_and_bad_utf8() {
        for q in [
            "a=%", "a=%4", "a=%zz", "a=%G0", "a%=1", "a=%%41", "a=%C3%28", "a=%FF", "%ZZ=1",
        ] {
            let e = err(q, b"");
            assert_eq!(e.code, -1100, "{q}");
            assert_eq!(e.http_status, 400);
        }
        assert_eq!(err("", b"a=\xff\xfe").code, -1100);
        assert_eq!(err("", &[0x80]).code, -1100);
    }

    #[test]
    fn control_characters_and_bad_names() {
        for q in [
            "a=%00",
            "a=%0A",
            "a=x%0Dy",
            "a=%09",
            "a=%7F",
            "a=\u{85}",
            "=1",
            "=",
            "a b=1",
            "a%20b=1",
            "a.b=1",
            "a[]=1",
            "{\"a\":1}",
            "é=1",
            "a-b=1",
        ] {
            assert_eq!(err(q, b"").code, -1100, "{q}");
        }
        let long_name = "a".repeat(65);
        assert_eq!(err(&format!("{long_name}=1"), b"").code, -1100);
        let ok_name = "a".repeat(64);
        assert!(Params::parse(&format!("{ok_name}=1"), b"").is_ok());
        assert!(Params::parse("under_score=1&CamelCase9=2", b"").is_ok());
    }

    #[test]
    fn json_body_is_rejected_not_ignored() {
        let e = err("", br#"{"symbol":"BTCUSDT","side":"BUY"}"#);
        assert_eq!(e.code, -1100);
        let e = err("", b"[1,2]");
        assert_eq!(e.code, -1100);
        // An empty body with any Content-Type is simply no parameters.
        assert!(p("a=1", "").len() == 1);
    }

    #[test]
    fn empty_segments_and_empty_values() {
        let ps = p("&a=1&&b=&c&", "&");
        assert_eq!(ps.len(), 3);
        assert_eq!(ps.get("b"), Some(""));
        assert_eq!(ps.get("c"), Some(""));
        let e = ps.required_str("b").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1105, "Parameter 'b' was empty.")
        );
        assert_eq!(ps.optional_str("c").unwrap_err().code, -1105);
        assert_eq!(ps.required_u64("b").unwrap_err().code, -1105);
        assert_eq!(ps.decimal_str("b").unwrap_err().code, -1105);
        let e = ps.required_str("zzz").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                -1102,
                "Mandatory parameter 'zzz' was not sent, was empty/null, or malformed."
            )
        );
        assert_eq!(ps.optional_str("zzz"), Ok(None));
        assert!(p("", "").is_empty());
        assert_eq!(p("&&&", "&&").len(), 0);
    }

    #[test]
    fn too_many_params_and_sizes() {
        let q: Vec<String> = (0..64).map(|i| format!("p{i}=1")).collect();
        assert_eq!(p(&q.join("&"), "").len(), 64);
        let q: Vec<String> = (0..65).map(|i| format!("p{i}=1")).collect();
        let e = err(&q.join("&"), b"");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1101, "Too many parameters sent for this endpoint.")
        );
        // The limit counts query and body together.
        let q: Vec<String> = (0..40).map(|i| format!("q{i}=1")).collect();
        let b: Vec<String> = (0..40).map(|i| format!("b{i}=1")).collect();
        assert_eq!(err(&q.join("&"), b.join("&").as_bytes()).code, -1101);

        let v = "x".repeat(MAX_VALUE_BYTES);
        assert_eq!(
            p(&format!("a={v}"), "").get("a").map(str::len),
            Some(MAX_VALUE_BYTES)
        );
        let e = err(&format!("a={v}x"), b"");
        assert_eq!(e.code, -1100);
        assert!(e.msg.contains("'a'"));
        let e = err(&format!("a={}", "%41".repeat(MAX_VALUE_BYTES + 1)), b"");
        assert_eq!(e.code, -1100);

        let huge = "a".repeat(MAX_INPUT_BYTES + 1);
        let e = err(&huge, b"");
        assert_eq!(e.http_status, 413);
        let e = err("", huge.as_bytes());
        assert_eq!(e.http_status, 413);
        // Lots of empty segments are fine and cheap.
        assert!(p(&"&".repeat(MAX_INPUT_BYTES), "").is_empty());
    }

    #[test]
    fn integers() {
        let ps = p(
            "a=0&b=18446744073709551615&c=18446744073709551616&d=-1&e=1.0&f=1e3&g=+1&h=%201&i=007&j=NaN&k=99999999999999999999999999999&l=１",
            "",
        );
        assert_eq!(ps.required_u64("a"), Ok(0));
        assert_eq!(ps.required_u64("b"), Ok(u64::MAX));
        assert_eq!(ps.required_u64("i"), Ok(7));
        let e = ps.required_u64("c").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1108, "Parameter 'c' overflowed.")
        );
        for name in ["d", "e", "f", "g", "h", "j", "k", "l"] {
            let e = ps.required_u64(name).unwrap_err();
            assert_eq!(e.code, -1100, "{name}");
            assert_eq!(
                e.msg,
                format!("Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
            );
        }
        assert_eq!(ps.optional_u64("a"), Ok(Some(0)));
        assert_eq!(ps.optional_u64("absent"), Ok(None));
        assert_eq!(ps.optional_u64("d").unwrap_err().code, -1100);
        assert_eq!(ps.required_u64("absent").unwrap_err().code, -1102);
    }

    #[test]
    fn decimals() {
        let good = [
            "0",
            "1",
            "0.1",
            "31000.0",
            "0.10000000",
            "1e-05",
            "1E-5",
            "2.5e+3",
            "+1",
            ".5",
            "5.",
            "12345678901234567890.12345678901234567890",
        ];
        for v in good {
            assert!(is_decimal_syntax(v), "{v}");
            let ps = p(&format!("price={}", v.replace('+', "%2B")), "");
            assert_eq!(ps.decimal_str("price"), Ok(v));
            assert_eq!(ps.optional_decimal_str("price"), Ok(Some(v)));
        }
        let bad = [
            "",
            ".",
            "+",
            "-1",
            "--1",
            "1.2.3",
            "NaN",
            "nan",
            "inf",
            "Infinity",
            "1e",
            "1e+",
            "1e1234",
            "e5",
            "0x10",
            "1,5",
            " 1",
            "1 ",
            "1_000",
            "١",
            "１",
            "1000000000000000000000000000000",
            "0.000000000000000000001",
            "123456789012345678901",
        ];
        for v in bad {
            assert!(!is_decimal_syntax(v), "{v:?}");
        }
        let ps = p("price=-1&q=NaN&r=1000000000000000000000000000000", "");
        for name in ["price", "q", "r"] {
            let e = ps.decimal_str(name).unwrap_err();
            assert_eq!(e.code, -1100);
            assert_eq!(
                e.msg,
                format!("Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")
            );
        }
        assert_eq!(ps.optional_decimal_str("absent"), Ok(None));
        assert_eq!(ps.decimal_str("absent").unwrap_err().code, -1102);
    }

    #[test]
    fn enums_bools_and_client_order_ids() {
        let ps = p(
            "newOrderRespType=FULL&x=full&b1=true&b2=FALSE&b3=1&id=x-HNA2TXFJ.a:b/c_d-e&bad=a%20b&long=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "",
        );
        let allowed = ["ACK", "RESULT", "FULL"];
        assert_eq!(ps.enum_of("newOrderRespType", &allowed), Ok(Some("FULL")));
        assert_eq!(ps.enum_of("absent", &allowed), Ok(None));
        let e = ps.enum_of("x", &allowed).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1130, "Data sent for parameter 'x' is not valid.")
        );
        assert_eq!(ps.optional_bool("b1"), Ok(Some(true)));
        assert_eq!(ps.optional_bool("b2"), Ok(Some(false)));
        assert_eq!(ps.optional_bool("b3").unwrap_err().code, -1130);
        assert_eq!(ps.optional_bool("absent"), Ok(None));
        assert_eq!(
            ps.optional_client_order_id("id"),
            Ok(Some("x-HNA2TXFJ.a:b/c_d-e"))
        );
        assert_eq!(ps.optional_client_order_id("absent"), Ok(None));
        for name in ["bad", "long"] {
            let e = ps.optional_client_order_id(name).unwrap_err();
            assert_eq!(e.code, -1100);
            assert!(
                e.msg
                    .ends_with("legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'."),
                "{}",
                e.msg
            );
        }
    }

    #[test]
    fn unknown_and_not_required() {
        let ps = p("symbol=BTCUSDT&timestamp=1&signature=x&created=5", "");
        let e = ps
            .check_unknown(&["symbol", "timestamp", "signature"])
            .unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                -1104,
                "Not all sent parameters were read; read '3' parameter(s) but was sent '4'."
            )
        );
        assert_eq!(
            ps.check_unknown(&["symbol", "timestamp", "signature", "created"]),
            Ok(())
        );
        assert_eq!(p("", "").check_unknown(&[]), Ok(()));
        let e = ps.reject_if_sent("created").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (-1106, "Parameter 'created' sent when not required.")
        );
        assert_eq!(ps.reject_if_sent("price"), Ok(()));
        let names: Vec<&str> = ps.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["symbol", "timestamp", "signature", "created"]);
        assert!(ps.contains("created"));
        assert!(!ps.contains("Symbol")); // names are case-sensitive
    }

    fn encode(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_random_bytes(query in proptest::collection::vec(any::<u8>(), 0..512),
                                              body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let query = String::from_utf8_lossy(&query);
            if let Ok(ps) = Params::parse(&query, &body) {
                prop_assert!(ps.len() <= MAX_PARAMS);
                prop_assert!(ps.signed_payload().len() <= query.len() + body.len());
            }
        }

        #[test]
        fn parse_never_panics_on_form_like_text(query in "[a-z%=&+0-9A-F\\x00-\\x20é]{0,200}",
                                                body in "[a-z%=&+0-9A-F\\x00-\\x20é]{0,200}") {
            let r = Params::parse(&query, body.as_bytes());
            if let Err(e) = r {
                prop_assert!(e.code < 0);
                prop_assert!(e.http_status == 400 || e.http_status == 413);
            }
        }

        #[test]
        fn round_trip_and_signature_removal(
            values in proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,10}", "\\PC{1,12}", 1..10),
            sig_pos in 0usize..12,
            sig_in_body in any::<bool>(),
        ) {
            let pairs: Vec<String> = values
                .iter()
                .filter(|(k, _)| k.as_str() != SIGNATURE)
                .map(|(k, v)| format!("{}={}", k, encode(v)))
                .collect();
            let unsigned = pairs.join("&");
            let mut with_sig = pairs.clone();
            with_sig.insert(sig_pos.min(pairs.len()), "signature=0123abcd".to_owned());
            let signed = with_sig.join("&");
            let ps = if sig_in_body {
                Params::parse("", signed.as_bytes())
            } else {
                Params::parse(&signed, b"")
            };
            let ps = ps.expect("parses");
            prop_assert_eq!(ps.signed_payload(), unsigned.as_bytes());
            prop_assert_eq!(ps.signature(), Some("0123abcd"));
            for (k, v) in values.iter().filter(|(k, _)| k.as_str() != SIGNATURE) {
                prop_assert_eq!(ps.get(k), Some(v.as_str()));
            }
        }
    }

    #[test]
    fn members_sort_by_name_and_find_repeated_names() {
        let mut m = Members::with_capacity(0, 0);
        m.push("side", ValueKind::Str, "BUY");
        m.push_display("timestamp", ValueKind::Json, 1_700_000_000_000u64);
        m.push("apiKey", ValueKind::Str, "k");
        m.push("newOrderRespType", ValueKind::Null, "null");
        assert!(m.sort());
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![
                ("apiKey", ValueKind::Str, "k"),
                ("newOrderRespType", ValueKind::Null, "null"),
                ("side", ValueKind::Str, "BUY"),
                ("timestamp", ValueKind::Json, "1700000000000"),
            ]
        );
        // Equal members compare equal wherever their text sits.
        let mut other = Members::with_capacity(64, 4);
        other.push("timestamp", ValueKind::Json, "1700000000000");
        other.push("side", ValueKind::Str, "BUY");
        other.push("newOrderRespType", ValueKind::Null, "null");
        other.push("apiKey", ValueKind::Str, "k");
        assert_ne!(m, other);
        assert!(other.sort());
        assert_eq!(m, other);
        other.push("side", ValueKind::Str, "SELL");
        assert!(!other.sort(), "a repeated name is found after sorting");
    }

    /// Look-ups compare an 8-byte name prefix first: names that share it
    /// (or are shorter than 8 bytes, or prefixes of each other) still find
    /// exactly their own value, on the REST and the WebSocket path.
    #[test]
    fn lookups_tell_names_with_a_common_prefix_apart() {
        let names = [
            "newClientOrderId",
            "newClientOrderIdX",
            "newClien",
            "newClie",
            "side",
            "sid",
        ];
        let query: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={i}"))
            .collect();
        let rest = Params::parse(&query.join("&"), b"").expect("valid");
        let mut m = Members::with_capacity(0, 0);
        for (i, n) in names.iter().enumerate() {
            m.push(n, ValueKind::Str, &i.to_string());
        }
        assert!(m.sort());
        let ws = Params::from_json(m).expect("valid");
        for p in [&rest, &ws] {
            for (i, n) in names.iter().enumerate() {
                assert_eq!(p.get(n), Some(i.to_string().as_str()), "{n}");
            }
            assert_eq!(p.get("newClientOrderIdY"), None);
            assert_eq!(p.get("newCli"), None);
            assert_eq!(p.get(""), None);
        }
    }

    #[test]
    fn json_params_keep_the_members_text_and_sign_every_member() {
        let mut m = Members::with_capacity(0, 0);
        m.push("apiKey", ValueKind::Str, "key1");
        m.push("newOrderRespType", ValueKind::Null, "null");
        m.push("price", ValueKind::Json, "1.5");
        m.push("returnRateLimits", ValueKind::Json, "false");
        m.push("signature", ValueKind::Str, "ab");
        m.push("symbol", ValueKind::Str, "BTCUSDT");
        let p = Params::from_json(m).expect("valid");
        assert_eq!(p.api_key(), Some("key1"));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            vec![("price", "1.5"), ("signature", "ab"), ("symbol", "BTCUSDT")]
        );
        assert_eq!(p.get("newOrderRespType"), None, "null counts as not sent");
        assert_eq!(p.signature(), Some("ab"));
        assert_eq!(
            p.signed_payload(),
            b"apiKey=key1&newOrderRespType=null&price=1.5&returnRateLimits=false&symbol=BTCUSDT"
        );
        let mut bad = Members::with_capacity(0, 0);
        bad.push("na-me", ValueKind::Str, "x");
        assert_eq!(
            Params::from_json(bad).map(|_| ()).unwrap_err().code,
            BinanceError::illegal_chars().code
        );
        let mut long = Members::with_capacity(0, 0);
        long.push("symbols", ValueKind::Str, &"x".repeat(MAX_VALUE_BYTES + 1));
        assert!(Params::from_json(long).is_err());
        let mut ctrl = Members::with_capacity(0, 0);
        ctrl.push("symbol", ValueKind::Str, "BTC\nUSDT");
        assert!(Params::from_json(ctrl).is_err());
    }
}
