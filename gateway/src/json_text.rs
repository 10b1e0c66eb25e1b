//! JSON text written straight into a `String`, for the answers on the order
//! path (a new order's reply is built for every order placed): building a
//! `serde_json::Value` first costs a map node and an allocation per member
//! and a second pass to serialize. Keys are `'static` names written as
//! they are; string values are escaped like serde_json escapes them.

pub use crate::binance::errors::push_json_string as push_str_lit;

/// A `serde_json::Value` as JSON text, through serde_json's writer (not
/// `Display`, which goes through `fmt` in small pieces). A `Value` always
/// serializes.
pub fn of_value(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// An object being written: `{` on creation, members separated by commas,
/// `}` from [`Obj::end`].
#[derive(Debug)]
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn new(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &'static str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
        self.out
    }

    /// A string member.
    pub fn str(&mut self, k: &'static str, v: &str) -> &mut Self {
        push_str_lit(self.key(k), v);
        self
    }

    /// A decimal amount as Binance sends it: a string of `units` with
    /// `decimals` places.
    pub fn units(&mut self, k: &'static str, units: u64, decimals: u32) -> &mut Self {
        let out = self.key(k);
        out.push('"');
        engine::decimal::push_units(out, u128::from(units), decimals);
        out.push('"');
        self
    }

    pub fn u64(&mut self, k: &'static str, v: u64) -> &mut Self {
        engine::decimal::push_units(self.key(k), u128::from(v), 0);
        self
    }

    pub fn i64(&mut self, k: &'static str, v: i64) -> &mut Self {
        let out = self.key(k);
        if v < 0 {
            out.push('-');
        }
        engine::decimal::push_units(out, u128::from(v.unsigned_abs()), 0);
        self
    }

    pub fn bool(&mut self, k: &'static str, v: bool) -> &mut Self {
        self.key(k).push_str(if v { "true" } else { "false" });
        self
    }

    /// A member whose value is JSON text already (an array or object).
    pub fn raw(&mut self, k: &'static str, json: &str) -> &mut Self {
        self.key(k).push_str(json);
        self
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn strings_escape_as_serde_json_does() {
        for s in [
            "",
            "BTCUSDT",
            "a\"b\\c",
            "tab\tnl\nret\r",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}",
            "ü\u{2028}€𝄞",
            "\\\"",
        ] {
            let mut out = String::new();
            push_str_lit(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn objects_read_back_as_the_values_written() {
        let mut out = String::new();
        let mut o = Obj::new(&mut out);
        o.str("symbol", "BTC\"USDT")
            .u64("orderId", u64::MAX)
            .i64("orderListId", -1)
            .i64("min", i64::MIN)
            .units("price", 3_000_000_000_000, 8)
            .units("qty", 1, 8)
            .bool("isMaker", false)
            .raw("fills", "[]");
        o.end();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({
                "symbol": "BTC\"USDT",
                "orderId": u64::MAX,
                "orderListId": -1,
                "min": i64::MIN,
                "price": "30000.00000000",
                "qty": "0.00000001",
                "isMaker": false,
                "fills": [],
            })
        );
        let mut empty = String::new();
        Obj::new(&mut empty).end();
        assert_eq!(empty, "{}");
    }
}
