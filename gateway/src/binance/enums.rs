//! Binance's enum values (enums.md) as Rust enums: exact, case-sensitive
//! parsing into the error Binance gives for a bad value, and formatting
//! back to the same text. Also the 16 kline intervals with their lengths
//! and the open time of the interval containing a timestamp.
//!
//! Invariants: `parse(x.as_str()) == Ok(x)` for every value; parse failures
//! carry the dedicated Binance code where there is one (-1115 timeInForce,
//! -1116 type, -1117 side, -1120 interval, -1122 symbolStatus) and -1130
//! "Data sent for parameter '%s' is not valid." otherwise. Kline open times
//! are UTC: fixed intervals are aligned to the Unix epoch, `1w` to Monday
//! 00:00, `1M` to the first day of the calendar month.

use std::fmt;
use std::str::FromStr;

use super::errors::BinanceError;

macro_rules! binance_enum {
    (
        $(#[$meta:meta])*
        $name:ident, error = $err:expr,
        { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in enums.md order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parse the exact (case-sensitive) wire text.
            pub fn parse(s: &str) -> Result<Self, BinanceError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($err),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = BinanceError;
            fn from_str(s: &str) -> Result<Self, BinanceError> {
                $name::parse(s)
            }
        }
    };
}

binance_enum! {
    /// `side`.
    Side, error = BinanceError::invalid_side(),
    { Buy => "BUY", Sell => "SELL" }
}

binance_enum! {
    /// `type` (orderTypes).
    OrderType, error = BinanceError::invalid_order_type(),
    {
        Limit => "LIMIT",
        Market => "MARKET",
        StopLoss => "STOP_LOSS",
        StopLossLimit => "STOP_LOSS_LIMIT",
        TakeProfit => "TAKE_PROFIT",
        TakeProfitLimit => "TAKE_PROFIT_LIMIT",
        LimitMaker => "LIMIT_MAKER",
    }
}

impl OrderType {
    /// Types whose request must carry `timeInForce` (rest-api.md "Other
    /// info" per type); others must not (-1114).
    pub fn requires_time_in_force(self) -> bool {
        matches!(
            self,
            OrderType::Limit | OrderType::StopLossLimit | OrderType::TakeProfitLimit
        )
    }

    /// Types whose request must carry `price`.
    pub fn requires_price(self) -> bool {
        matches!(
            self,
            OrderType::Limit
                | OrderType::StopLossLimit
                | OrderType::TakeProfitLimit
                | OrderType::LimitMaker
        )
    }

    /// Types whose request must carry `stopPrice`.
    pub fn requires_stop_price(self) -> bool {
        matches!(
            self,
            OrderType::StopLoss
                | OrderType::StopLossLimit
                | OrderType::TakeProfit
                | OrderType::TakeProfitLimit
        )
    }
}

binance_enum! {
    /// `timeInForce`.
    TimeInForce, error = BinanceError::invalid_tif(),
    { Gtc => "GTC", Ioc => "IOC", Fok => "FOK" }
}

binance_enum! {
    /// `newOrderRespType`.
    NewOrderRespType, error = BinanceError::invalid_parameter("newOrderRespType"),
    { Ack => "ACK", Result => "RESULT", Full => "FULL" }
}

impl NewOrderRespType {
    /// Binance's default: FULL for MARKET and LIMIT, ACK for every other
    /// type.
    pub fn default_for(order_type: OrderType) -> Self {
        match order_type {
            OrderType::Market | OrderType::Limit => NewOrderRespType::Full,
            _ => NewOrderRespType::Ack,
        }
    }
}

binance_enum! {
    /// `selfTradePreventionMode`: the modes API.md supports (Binance also
    /// lists DECREMENT and TRANSFER; those are refused here with -1130).
    SelfTradePreventionMode, error = BinanceError::invalid_parameter("selfTradePreventionMode"),
    {
        None => "NONE",
        ExpireTaker => "EXPIRE_TAKER",
        ExpireMaker => "EXPIRE_MAKER",
        ExpireBoth => "EXPIRE_BOTH",
    }
}

impl Default for SelfTradePreventionMode {
    /// API.md: EXPIRE_MAKER when the order does not say.
    fn default() -> Self {
        SelfTradePreventionMode::ExpireMaker
    }
}

binance_enum! {
    /// `cancelReplaceMode` of POST /api/v3/order/cancelReplace.
    CancelReplaceMode, error = BinanceError::invalid_parameter("cancelReplaceMode"),
    { StopOnFailure => "STOP_ON_FAILURE", AllowFailure => "ALLOW_FAILURE" }
}

binance_enum! {
    /// `orderRateLimitExceededMode` of cancelReplace.
    OrderRateLimitExceededMode, error = BinanceError::invalid_parameter("orderRateLimitExceededMode"),
    { DoNothing => "DO_NOTHING", CancelOnly => "CANCEL_ONLY" }
}

binance_enum! {
    /// Order `status` (the values API.md lists).
    OrderStatus, error = BinanceError::invalid_parameter("status"),
    {
        New => "NEW",
        PartiallyFilled => "PARTIALLY_FILLED",
        Filled => "FILLED",
        Canceled => "CANCELED",
        Rejected => "REJECTED",
        Expired => "EXPIRED",
        ExpiredInMatch => "EXPIRED_IN_MATCH",
    }
}

impl OrderStatus {
    /// True once the order can no longer trade or be canceled.
    pub fn is_final(self) -> bool {
        !matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

binance_enum! {
    /// Symbol `status` in exchangeInfo (and `symbolStatus` filter).
    SymbolStatus, error = BinanceError::invalid_symbol_status(),
    {
        Trading => "TRADING",
        EndOfDay => "END_OF_DAY",
        Halt => "HALT",
        Break => "BREAK",
        CancelOnly => "CANCEL_ONLY",
    }
}

binance_enum! {
    /// Kline/candlestick `interval`.
    KlineInterval, error = BinanceError::bad_interval(),
    {
        S1 => "1s",
        M1 => "1m",
        M3 => "3m",
        M5 => "5m",
        M15 => "15m",
        M30 => "30m",
        H1 => "1h",
        H2 => "2h",
        H4 => "4h",
        H6 => "6h",
        H8 => "8h",
        H12 => "12h",
        D1 => "1d",
        D3 => "3d",
        W1 => "1w",
        /// One calendar month.
        Mo1 => "1M",
    }
}

impl KlineInterval {
    /// The same interval in the persister's candle arithmetic, the one
    /// implementation of the calendar rules (fixed lengths, Monday weeks,
    /// calendar months) that the market projection and the `klines` table
    /// share.
    fn candle(self) -> persister::klines::Interval {
        use persister::klines::Interval as I;
        match self {
            KlineInterval::S1 => I::S1,
            KlineInterval::M1 => I::M1,
            KlineInterval::M3 => I::M3,
            KlineInterval::M5 => I::M5,
            KlineInterval::M15 => I::M15,
            KlineInterval::M30 => I::M30,
            KlineInterval::H1 => I::H1,
            KlineInterval::H2 => I::H2,
            KlineInterval::H4 => I::H4,
            KlineInterval::H6 => I::H6,
            KlineInterval::H8 => I::H8,
            KlineInterval::H12 => I::H12,
            KlineInterval::D1 => I::D1,
            KlineInterval::D3 => I::D3,
            KlineInterval::W1 => I::W1,
            KlineInterval::Mo1 => I::Mo1,
        }
    }

    /// Length in ms, `None` for `1M` (a calendar month: 28 to 31 days; see
    /// `open_time_ms` / `next_open_time_ms`).
    pub fn fixed_millis(self) -> Option<u64> {
        self.candle().fixed_ms()
    }

    /// Open time (UTC, ms) of the interval containing `ts_ms`. `1w` opens
    /// on Mondays; timestamps before the first Monday after the epoch
    /// (1970-01-05) map to 0, the earliest representable time.
    pub fn open_time_ms(self, ts_ms: u64) -> u64 {
        self.candle().open_time_ms(ts_ms)
    }

    /// Open time of the interval after the one containing `ts_ms`
    /// (saturating at u64::MAX).
    pub fn next_open_time_ms(self, ts_ms: u64) -> u64 {
        self.candle().next_open_time_ms(ts_ms)
    }

    /// Close time as Binance reports it: next open time - 1.
    pub fn close_time_ms(self, ts_ms: u64) -> u64 {
        self.next_open_time_ms(ts_ms).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persister::klines::{civil_from_days, days_from_civil};

    const DAY_MS: u64 = 86_400_000;
    const FIRST_MONDAY_MS: u64 = 4 * DAY_MS;

    fn round_trip<T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = BinanceError>>(
        all: &[T],
        as_str: fn(T) -> &'static str,
    ) {
        for &v in all {
            assert_eq!(as_str(v).parse::<T>(), Ok(v));
            assert_eq!(v.to_string(), as_str(v));
        }
    }

    #[test]
    fn all_enums_round_trip() {
        round_trip(Side::ALL, Side::as_str);
        round_trip(OrderType::ALL, OrderType::as_str);
        round_trip(TimeInForce::ALL, TimeInForce::as_str);
        round_trip(NewOrderRespType::ALL, NewOrderRespType::as_str);
        round_trip(
            SelfTradePreventionMode::ALL,
            SelfTradePreventionMode::as_str,
        );
        round_trip(CancelReplaceMode::ALL, CancelReplaceMode::as_str);
        round_trip(
            OrderRateLimitExceededMode::ALL,
            OrderRateLimitExceededMode::as_str,
        );
        round_trip(OrderStatus::ALL, OrderStatus::as_str);
        round_trip(SymbolStatus::ALL, SymbolStatus::as_str);
        round_trip(KlineInterval::ALL, KlineInterval::as_str);
        assert_eq!(OrderType::ALL.len(), 7);
        assert_eq!(OrderStatus::ALL.len(), 7);
        assert_eq!(KlineInterval::ALL.len(), 16);
        let names: Vec<&str> = KlineInterval::ALL.iter().map(|i| i.as_str()).collect();
        assert_eq!(
            names,
            [
                "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
                "3d", "1w", "1M"
            ]
        );
    }

    #[test]
    fn bad_values_get_binance_codes() {
        let hostile = [
            "",
            "buy",
            "Buy",
            " BUY",
            "BUY ",
            "BUY\0",
            "ＢＵＹ",
            "NaN",
            "1m\n",
            "1y",
            "0m",
            "60s",
            "1W",
            "1H",
        ];
        for v in hostile {
            assert_eq!(Side::parse(v).unwrap_err().code, -1117, "{v:?}");
            assert_eq!(OrderType::parse(v).unwrap_err().code, -1116);
            assert_eq!(TimeInForce::parse(v).unwrap_err().code, -1115);
            assert_eq!(KlineInterval::parse(v).unwrap_err().code, -1120);
            assert_eq!(SymbolStatus::parse(v).unwrap_err().code, -1122);
            assert_eq!(NewOrderRespType::parse(v).unwrap_err().code, -1130);
            assert_eq!(CancelReplaceMode::parse(v).unwrap_err().code, -1130);
        }
        assert_eq!(Side::parse("x").unwrap_err().msg, "Invalid side.");
        assert_eq!(OrderType::parse("x").unwrap_err().msg, "Invalid orderType.");
        assert_eq!(
            TimeInForce::parse("GTX").unwrap_err().msg,
            "Invalid timeInForce."
        );
        assert_eq!(
            KlineInterval::parse("2m").unwrap_err().msg,
            "Invalid interval."
        );
        assert_eq!(
            SelfTradePreventionMode::parse("DECREMENT").unwrap_err().msg,
            "Data sent for parameter 'selfTradePreventionMode' is not valid."
        );
        assert_eq!(
            NewOrderRespType::parse("full").unwrap_err().msg,
            "Data sent for parameter 'newOrderRespType' is not valid."
        );
        assert!(OrderRateLimitExceededMode::parse("x").is_err());
        assert!(OrderStatus::parse("PENDING_CANCEL").is_err());
        // 1m and 1M are different intervals.
        assert_eq!(KlineInterval::parse("1m"), Ok(KlineInterval::M1));
        assert_eq!(KlineInterval::parse("1M"), Ok(KlineInterval::Mo1));
    }

    #[test]
    fn order_type_requirements_and_defaults() {
        use OrderType::*;
        let tif: Vec<OrderType> = OrderType::ALL
            .iter()
            .copied()
            .filter(|t| t.requires_time_in_force())
            .collect();
        assert_eq!(tif, [Limit, StopLossLimit, TakeProfitLimit]);
        let price: Vec<OrderType> = OrderType::ALL
            .iter()
            .copied()
            .filter(|t| t.requires_price())
            .collect();
        assert_eq!(price, [Limit, StopLossLimit, TakeProfitLimit, LimitMaker]);
        let stop: Vec<OrderType> = OrderType::ALL
            .iter()
            .copied()
            .filter(|t| t.requires_stop_price())
            .collect();
        assert_eq!(stop, [StopLoss, StopLossLimit, TakeProfit, TakeProfitLimit]);
        assert_eq!(NewOrderRespType::default_for(Limit), NewOrderRespType::Full);
        assert_eq!(
            NewOrderRespType::default_for(Market),
            NewOrderRespType::Full
        );
        for t in [
            StopLoss,
            StopLossLimit,
            TakeProfit,
            TakeProfitLimit,
            LimitMaker,
        ] {
            assert_eq!(NewOrderRespType::default_for(t), NewOrderRespType::Ack);
        }
        assert_eq!(
            SelfTradePreventionMode::default(),
            SelfTradePreventionMode::ExpireMaker
        );
        assert!(!OrderStatus::New.is_final());
        assert!(!OrderStatus::PartiallyFilled.is_final());
        for s in [
            OrderStatus::Filled,
            OrderStatus::Canceled,
            OrderStatus::Rejected,
            OrderStatus::Expired,
            OrderStatus::ExpiredInMatch,
        ] {
            assert!(s.is_final());
        }
    }

    /// 2024-02-29T13:45:30.123Z, a Thursday in a leap year.
    const TS: u64 = 1_709_214_330_123;

    #[test]
    fn fixed_interval_lengths_and_alignment() {
        let lengths: Vec<u64> = KlineInterval::ALL
            .iter()
            .filter_map(|i| i.fixed_millis())
            .collect();
        assert_eq!(
            lengths,
            [
                1_000,
                60_000,
                180_000,
                300_000,
                900_000,
                1_800_000,
                3_600_000,
                7_200_000,
                14_400_000,
                21_600_000,
                28_800_000,
                43_200_000,
                86_400_000,
                259_200_000,
                604_800_000
            ]
        );
        assert_eq!(KlineInterval::Mo1.fixed_millis(), None);
        use KlineInterval::*;
        assert_eq!(S1.open_time_ms(TS), 1_709_214_330_000);
        assert_eq!(M1.open_time_ms(TS), 1_709_214_300_000);
        assert_eq!(M15.open_time_ms(TS), 1_709_214_300_000); // 13:45
        assert_eq!(H4.open_time_ms(TS), 1_709_208_000_000); // 12:00
        assert_eq!(D1.open_time_ms(TS), 1_709_164_800_000); // 2024-02-29
        assert_eq!(D1.close_time_ms(TS), 1_709_251_199_999);
        assert_eq!(D3.open_time_ms(TS) % 259_200_000, 0);
        for i in KlineInterval::ALL {
            let open = i.open_time_ms(TS);
            let next = i.next_open_time_ms(TS);
            assert!(open <= TS && TS < next, "{i}");
            assert_eq!(i.open_time_ms(open), open, "{i}");
            assert_eq!(i.open_time_ms(next - 1), open, "{i}");
            assert_eq!(i.open_time_ms(next), next, "{i}");
            assert_eq!(i.close_time_ms(TS), next - 1);
            if let Some(len) = i.fixed_millis() {
                assert_eq!(next - open, len, "{i}");
            }
        }
    }

    #[test]
    fn weeks_open_on_monday() {
        let w = KlineInterval::W1;
        // 2024-02-26 (Monday) 00:00 UTC.
        assert_eq!(w.open_time_ms(TS), 1_708_905_600_000);
        assert_eq!(w.next_open_time_ms(TS), 1_709_510_400_000);
        // A Monday 00:00 opens its own week; Sunday 23:59:59.999 is the
        // previous one.
        assert_eq!(w.open_time_ms(1_708_905_600_000), 1_708_905_600_000);
        assert_eq!(w.open_time_ms(1_708_905_599_999), 1_708_300_800_000);
        // Every week open is a Monday: (days since epoch + 3) % 7 == 0.
        let mut t = 0u64;
        while t < 2_000_000_000_000 {
            let open = w.open_time_ms(t);
            if open > 0 {
                assert_eq!((open / DAY_MS + 3) % 7, 0);
            }
            t += 86_400_000 * 13 + 12_345;
        }
        // Before the first Monday after the epoch.
        assert_eq!(w.open_time_ms(0), 0);
        assert_eq!(w.open_time_ms(FIRST_MONDAY_MS - 1), 0);
        assert_eq!(w.next_open_time_ms(0), FIRST_MONDAY_MS);
        assert_eq!(w.open_time_ms(FIRST_MONDAY_MS), FIRST_MONDAY_MS);
    }

    #[test]
    fn months_are_calendar_months() {
        let m = KlineInterval::Mo1;
        // February 2024 (leap): 29 days.
        assert_eq!(m.open_time_ms(TS), 1_706_745_600_000); // 2024-02-01
        assert_eq!(m.next_open_time_ms(TS), 1_709_251_200_000); // 2024-03-01
        assert_eq!(m.close_time_ms(TS), 1_709_251_199_999);
        // February 2023: 28 days; December rolls the year.
        let feb_2023 = 1_675_209_600_000; // 2023-02-01
        assert_eq!(m.next_open_time_ms(feb_2023) - feb_2023, 28 * DAY_MS);
        let dec_2023 = 1_701_388_800_000; // 2023-12-01
        assert_eq!(m.open_time_ms(dec_2023 + 30 * DAY_MS), dec_2023);
        assert_eq!(m.next_open_time_ms(dec_2023), 1_704_067_200_000); // 2024-01-01
                                                                      // 2000 was a leap year, 1900 and 2100 are not.
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1),
            29
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 1),
            28
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(m.open_time_ms(0), 0);
        // Walk day by day over four centuries' worth of sample days:
        // civil_from_days and days_from_civil agree, and month opens hold.
        let mut day = -800_000i64;
        while day < 800_000 {
            let (y, mo, d) = civil_from_days(day);
            assert!((1..=12).contains(&mo) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, mo, d), day);
            day += 37;
        }
        let mut t = 0u64;
        while t < 4_000_000_000_000 {
            let open = m.open_time_ms(t);
            let next = m.next_open_time_ms(t);
            assert!(open <= t && t < next);
            let len_days = (next - open) / DAY_MS;
            assert!((28..=31).contains(&len_days));
            assert_eq!(civil_from_days((open / DAY_MS) as i64).2, 1);
            t += 86_400_000 * 17 + 1;
        }
    }

    #[test]
    fn extreme_timestamps_never_panic() {
        for i in KlineInterval::ALL {
            for ts in [0, 1, u64::MAX / 2, i64::MAX as u64, u64::MAX - 1, u64::MAX] {
                let open = i.open_time_ms(ts);
                let next = i.next_open_time_ms(ts);
                assert!(open <= ts, "{i} {ts}");
                assert!(next >= open);
                let _ = i.close_time_ms(ts);
            }
        }
    }
}
