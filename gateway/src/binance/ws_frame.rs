//! The fast path of WebSocket API frame decoding: a well-formed request
//! `{"id":..,"method":"..","params":{..}}` read in one pass straight into
//! its id, method and sorted `params` members, without building a
//! `serde_json::Value` tree (one `BTreeMap` node and `Value` per member).
//!
//! It only ever answers for frames the general decoder (`wsapi::decode`,
//! through a `Value`) would accept, and then with exactly what that decoder
//! gives: anything unusual (not an object, a repeated or unknown key, an id
//! that is neither an integer, a short string nor null, a method that is not
//! a string, `params` that is neither an object nor null, a repeated param,
//! a nested array or object value, trailing text) makes it return `None`,
//! and the caller runs the general decoder, which owns every error message.
//! A unit test compares the two on valid and hostile frames.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::params::{Members, ValueKind};

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    pub id: Value,
    /// Without a `v3/` prefix; borrowed from the frame's text unless it
    /// held escapes.
    pub method: Cow<'a, str>,
    /// Sorted by name, names unique.
    pub params: Members,
}

/// `Some` for a well-formed request with an acceptable id (an integer, a
/// string of at most `max_id_len` bytes, or null/absent) and a method.
pub fn decode_fast(text: &str, max_id_len: usize) -> Option<Frame<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = de
        .deserialize_map(FrameVisitor {
            text_len: text.len(),
        })
        .ok()?;
    de.end().ok()?;
    let id = match raw.id {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if s.len() <= max_id_len => Value::String(s),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        Some(_) => return None,
    };
    let method = match raw.method? {
        Cow::Borrowed(m) => Cow::Borrowed(m.strip_prefix("v3/").unwrap_or(m)),
        Cow::Owned(m) => Cow::Owned(m.strip_prefix("v3/").unwrap_or(&m).to_string()),
    };
    let mut params = raw.params.unwrap_or_default();
    if !params.sort() {
        return None;
    }
    Some(Frame { id, method, params })
}

/// What the top-level object held.
struct RawFrame<'de> {
    id: Option<Value>,
    method: Option<Cow<'de, str>>,
    params: Option<Members>,
}

/// Any error: the general decoder takes over.
fn fall_back<E: de::Error>() -> E {
    E::custom("not a plain request frame")
}

struct FrameVisitor {
    /// The frame's length: room enough for its members' text.
    text_len: usize,
}

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = RawFrame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawFrame<'de>, A::Error> {
        let mut frame = RawFrame {
            id: None,
            method: None,
            params: None,
        };
        let mut seen_params = false;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "id" if frame.id.is_none() => frame.id = Some(map.next_value::<Value>()?),
                "method" if frame.method.is_none() => {
                    frame.method = Some(map.next_value::<Text<'de>>()?.0);
                }
                "params" if !seen_params => {
                    seen_params = true;
                    frame.params = map.next_value_seed(ParamsSeed {
                        text_len: self.text_len,
                    })?;
                }
                _ => return Err(fall_back()),
            }
        }
        Ok(frame)
    }
}

/// A JSON string, borrowed from the frame when it has no escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `params`: an object (members in frame order) or null (`None`).
struct ParamsSeed {
    text_len: usize,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Option<Members>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Option<Members>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::with_capacity(self.text_len, map.size_hint().unwrap_or(12));
        while let Some(key) = map.next_key::<Text<'de>>()? {
            map.next_value_seed(Scalar {
                name: &key.0,
                members: &mut members,
            })?;
        }
        Ok(Some(members))
    }
}

/// A member value that is not an array or object, appended to `members`
/// under `name` as [`super::params::json_members`] renders it from a
/// `Value` (numbers through `serde_json::Number`, so the text is the same).
struct Scalar<'a> {
    name: &'a str,
    members: &'a mut Members,
}

impl<'de> DeserializeSeed<'de> for Scalar<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.members.push(self.name, ValueKind::Null, "null");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        let text = if v { "true" } else { "false" };
        self.members.push(self.name, ValueKind::Json, text);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        let n = serde_json::Number::from(v);
        self.members.push_display(self.name, ValueKind::Json, n);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let n = serde_json::Number::from(v);
        self.members.push_display(self.name, ValueKind::Json, n);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        let n = serde_json::Number::from_f64(v).ok_or_else(fall_back)?;
        self.members.push_display(self.name, ValueKind::Json, n);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.members.push(self.name, ValueKind::Str, v);
        Ok(())
    }
}
