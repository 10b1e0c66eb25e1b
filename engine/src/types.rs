//! Domain newtypes: every id, price and quantity is an integer in a newtype so
//! that a price can never be passed where a quantity is expected. Prices are
//! ticks of the pair's tick size; quantities and amounts are base units of the
//! asset (10^-decimals). Nothing here is floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident, $inner:ty) => {
        $(#[$m])*
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_newtype!(
    /// Asset id, dense from 1 in the order assets were added.
    AssetId, u32
);
id_newtype!(
    /// Trading pair id, dense from 1 in the order pairs were added.
    PairId, u32
);
id_newtype!(
    /// User id; 0 is the exchange's own account (fees by default).
    UserId, u64
);
id_newtype!(
    /// Order id, global across pairs, never reused.
    OrderId, u64
);
id_newtype!(
    /// Trade id, global across pairs, never reused.
    TradeId, u64
);
id_newtype!(
    /// Price in ticks of the pair's tick size.
    Price, u64
);
id_newtype!(
    /// Quantity in base units of the pair's base asset.
    Qty, u64
);

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderType {
    Limit,
    Market,
    LimitMaker,
    StopLoss,
    StopLossLimit,
    TakeProfit,
    TakeProfitLimit,
}

impl OrderType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "LIMIT",
            OrderType::Market => "MARKET",
            OrderType::LimitMaker => "LIMIT_MAKER",
            OrderType::StopLoss => "STOP_LOSS",
            OrderType::StopLossLimit => "STOP_LOSS_LIMIT",
            OrderType::TakeProfit => "TAKE_PROFIT",
            OrderType::TakeProfitLimit => "TAKE_PROFIT_LIMIT",
        }
    }
    pub fn is_stop(self) -> bool {
        matches!(
            self,
            OrderType::StopLoss
                | OrderType::StopLossLimit
                | OrderType::TakeProfit
                | OrderType::TakeProfitLimit
        )
    }
    /// Whether the order carries a limit price once active.
    pub fn has_limit_price(self) -> bool {
        matches!(
            self,
            OrderType::Limit
                | OrderType::LimitMaker
                | OrderType::StopLossLimit
                | OrderType::TakeProfitLimit
        )
    }
    pub const ALL: [OrderType; 7] = [
        OrderType::Limit,
        OrderType::LimitMaker,
        OrderType::Market,
        OrderType::StopLoss,
        OrderType::StopLossLimit,
        OrderType::TakeProfit,
        OrderType::TakeProfitLimit,
    ];
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimeInForce {
    Gtc,
    Ioc,
    Fok,
}

impl TimeInForce {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "GTC",
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
        }
    }
}

/// Self-trade prevention mode (Binance names). The taker's mode decides.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StpMode {
    None,
    ExpireTaker,
    ExpireMaker,
    ExpireBoth,
}

impl StpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StpMode::None => "NONE",
            StpMode::ExpireTaker => "EXPIRE_TAKER",
            StpMode::ExpireMaker => "EXPIRE_MAKER",
            StpMode::ExpireBoth => "EXPIRE_BOTH",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    ExpiredInMatch,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::New => "NEW",
            OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Canceled => "CANCELED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::ExpiredInMatch => "EXPIRED_IN_MATCH",
        }
    }
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PairStatus {
    Trading,
    Halt,
    CancelOnly,
}

impl PairStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PairStatus::Trading => "TRADING",
            PairStatus::Halt => "HALT",
            PairStatus::CancelOnly => "CANCEL_ONLY",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UserStatus {
    Active,
    Suspended,
}

/// A client order id: `^[.A-Z:/a-z0-9_-]{1,36}$` (Binance's rule), stored inline so orders
/// carrying one never allocate. Length 0 means "none".
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientOrderId {
    len: u8,
    bytes: [u8; 36],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientOrderIdError {
    #[error("client order id is empty")]
    Empty,
    #[error("client order id is longer than 36 characters")]
    TooLong,
    #[error("client order id may only contain letters, digits, '-', '_', '.', ':' and '/'")]
    BadCharacter,
}

/// The bytes a client order id may hold: letters, digits, '-', '_', '.',
/// ':' and '/' (one table lookup per byte; every order's id is checked
/// where it is accepted and again wherever a journal record is decoded).
static CLIENT_ID_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/');
        c += 1;
    }
    t
};

impl ClientOrderId {
    pub const NONE: ClientOrderId = ClientOrderId {
        len: 0,
        bytes: [0; 36],
    };

    pub fn new(s: &str) -> Result<Self, ClientOrderIdError> {
        ClientOrderId::from_bytes(s.as_bytes())
    }

    /// [`ClientOrderId::new`] of raw bytes (a journal record's): the
    /// allowed characters are ASCII, so no separate UTF-8 check is needed.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ClientOrderIdError> {
        if b.is_empty() {
            return Err(ClientOrderIdError::Empty);
        }
        if b.len() > 36 {
            return Err(ClientOrderIdError::TooLong);
        }
        if !b.iter().all(|&c| CLIENT_ID_BYTE[usize::from(c)]) {
            return Err(ClientOrderIdError::BadCharacter);
        }
        let mut bytes = [0u8; 36];
        bytes[..b.len()].copy_from_slice(b);
        Ok(ClientOrderId {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn is_none(&self) -> bool {
        self.len == 0
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from validated ASCII (or the all-zero NONE).
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The id's ASCII bytes (empty for NONE), without `as_str`'s UTF-8
    /// check: for writers that copy bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl Default for ClientOrderId {
    fn default() -> Self {
        ClientOrderId::NONE
    }
}

impl Serialize for ClientOrderId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ClientOrderId {
    /// Read from the input in place (`deserialize_str`): every order in a
    /// journal carries one, and going through an owned string cost the
    /// replay, the snapshot replica and the persister an allocation and a
    /// free per order. Deserializers that can only hand out owned text
    /// (JSON with escapes) still reach `visit_str`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = ClientOrderId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a client order id (string)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ClientOrderId, E> {
                if s.is_empty() {
                    return Ok(ClientOrderId::NONE);
                }
                ClientOrderId::new(s).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl fmt::Debug for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Fee rates are integers in units of 1e-8 (0.001 = 100_000).
pub const FEE_RATE_SCALE: u64 = 100_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_id_validation() {
        assert!(ClientOrderId::new("x-HNA2TXFJ1234").is_ok());
        assert_eq!(ClientOrderId::new("abc").unwrap().as_str(), "abc");
        assert_eq!(ClientOrderId::new(""), Err(ClientOrderIdError::Empty));
        assert_eq!(
            ClientOrderId::new(&"a".repeat(37)),
            Err(ClientOrderIdError::TooLong)
        );
        assert!(ClientOrderId::new(&"a".repeat(36)).is_ok());
        assert_eq!(
            ClientOrderId::new("a b"),
            Err(ClientOrderIdError::BadCharacter)
        );
        assert_eq!(
            ClientOrderId::new("ü"),
            Err(ClientOrderIdError::BadCharacter)
        );
        assert!(ClientOrderId::NONE.is_none());
    }

    #[test]
    fn the_byte_table_is_the_documented_character_set() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-_.:/".contains(&b);
            assert_eq!(CLIENT_ID_BYTE[usize::from(b)], allowed, "byte {b}");
            assert_eq!(ClientOrderId::from_bytes(&[b]).is_ok(), allowed, "byte {b}");
        }
        assert_eq!(
            ClientOrderId::from_bytes(&[0xc3, 0xbc]),
            Err(ClientOrderIdError::BadCharacter)
        );
        assert_eq!(
            ClientOrderId::from_bytes(b""),
            Err(ClientOrderIdError::Empty)
        );
        assert_eq!(
            ClientOrderId::from_bytes(&[b'a'; 37]),
            Err(ClientOrderIdError::TooLong)
        );
        assert_eq!(
            ClientOrderId::from_bytes(b"a:b/c").unwrap().as_str(),
            "a:b/c"
        );
    }

    #[test]
    fn client_order_ids_decode_in_place_and_from_owned_text() {
        use bincode::Options;
        let opts = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes();
        for id in [
            ClientOrderId::new("x-HNA2TXFJ1234").unwrap(),
            ClientOrderId::NONE,
        ] {
            let bytes = opts.serialize(&id).unwrap();
            assert_eq!(opts.deserialize::<ClientOrderId>(&bytes).unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<ClientOrderId>(&json).unwrap(), id);
            // From a reader (no borrowing possible): the owned path.
            assert_eq!(
                serde_json::from_reader::<_, ClientOrderId>(json.as_bytes()).unwrap(),
                id
            );
        }
        // An escape makes serde_json hand over owned text.
        assert_eq!(
            serde_json::from_str::<ClientOrderId>(r#""\u0061bc""#).unwrap(),
            ClientOrderId::new("abc").unwrap()
        );
        // Invalid ids and other types are errors, not panics.
        assert!(serde_json::from_str::<ClientOrderId>(r#""a b""#).is_err());
        assert!(serde_json::from_str::<ClientOrderId>("7").is_err());
        let long = opts.serialize(&"a".repeat(37)).unwrap();
        assert!(opts.deserialize::<ClientOrderId>(&long).is_err());
        let bad_utf8 = [2u8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe];
        assert!(opts.deserialize::<ClientOrderId>(&bad_utf8).is_err());
        let truncated = [9u8, 0, 0, 0, 0, 0, 0, 0, b'a'];
        assert!(opts.deserialize::<ClientOrderId>(&truncated).is_err());
    }
}
