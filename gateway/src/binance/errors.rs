//! Binance error values: a code, Binance's verbatim message and the HTTP
//! status the REST gateway answers with.
//!
//! Invariants: every constructor here carries a code and text taken from
//! binance-spot-api-docs `errors.md` (or, where that page only gives a code,
//! the text real Binance servers send and clients match on); `to_json` always
//! produces `{"code":<int>,"msg":"<text>"}` with the message JSON-escaped, and
//! never fails. Statuses follow API.md: 400 for request, filter and order
//! errors, 401 for API-key and authorization errors, 429 rate limited, 418
//! auto-ban, 413 body too large, 409 cancelReplace partial success, 5xx only
//! for the server's own trouble.

use std::fmt;

/// One Binance error: what the gateway sends as the response body
/// (`to_json`) with `http_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinanceError {
    pub code: i32,
    pub msg: String,
    pub http_status: u16,
}

impl fmt::Display for BinanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.msg)
    }
}

impl std::error::Error for BinanceError {}

/// Filters whose failure is reported as -1013 `"Filter failure: <NAME>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterFailure {
    PriceFilter,
    PercentPrice,
    LotSize,
    MinNotional,
    Notional,
    MarketLotSize,
    MaxNumOrders,
    MaxNumAlgoOrders,
    ExchangeMaxNumOrders,
    ExchangeMaxNumAlgoOrders,
}

impl FilterFailure {
    /// The filter's name as exchangeInfo and the error text spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterFailure::PriceFilter => "PRICE_FILTER",
            FilterFailure::PercentPrice => "PERCENT_PRICE",
            FilterFailure::LotSize => "LOT_SIZE",
            FilterFailure::MinNotional => "MIN_NOTIONAL",
            FilterFailure::Notional => "NOTIONAL",
            FilterFailure::MarketLotSize => "MARKET_LOT_SIZE",
            FilterFailure::MaxNumOrders => "MAX_NUM_ORDERS",
            FilterFailure::MaxNumAlgoOrders => "MAX_NUM_ALGO_ORDERS",
            FilterFailure::ExchangeMaxNumOrders => "EXCHANGE_MAX_NUM_ORDERS",
            FilterFailure::ExchangeMaxNumAlgoOrders => "EXCHANGE_MAX_NUM_ALGO_ORDERS",
        }
    }
}

const BAD_REQUEST: u16 = 400;
const UNAUTHORIZED: u16 = 401;
const CONFLICT: u16 = 409;
const PAYLOAD_TOO_LARGE: u16 = 413;
const IM_A_TEAPOT: u16 = 418;
const TOO_MANY_REQUESTS: u16 = 429;
const INTERNAL: u16 = 500;
const UNAVAILABLE: u16 = 503;

/// Legal range Binance quotes for integer parameters (ids, times, limits).
pub const LEGAL_RANGE_INTEGER: &str = "^[0-9]{1,20}$";
/// Legal range Binance quotes for decimal parameters (price, quantity, ...).
pub const LEGAL_RANGE_DECIMAL: &str = "^([0-9]{1,20})(\\.[0-9]{1,20})?$";
/// Legal range Binance quotes for client order ids.
pub const LEGAL_RANGE_CLIENT_ORDER_ID: &str = "^[\\.A-Z\\:/a-z0-9_-]{1,36}$";

impl BinanceError {
    pub fn new(code: i32, msg: impl Into<String>, http_status: u16) -> Self {
        BinanceError {
            code,
            msg: msg.into(),
            http_status,
        }
    }

    fn bad(code: i32, msg: impl Into<String>) -> Self {
        Self::new(code, msg, BAD_REQUEST)
    }

    /// `{"code":-1121,"msg":"Invalid symbol."}`.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.msg.len() + 24);
        out.push_str("{\"code\":");
        out.push_str(&self.code.to_string());
        out.push_str(",\"msg\":");
        push_json_string(&mut out, &self.msg);
        out.push('}');
        out
    }

    /// `{"code":..,"msg":..,"data":<data>}`: the cancelReplace failure shape
    /// (-2021/-2022), where `data` holds `cancelResult`, `newOrderResult`,
    /// `cancelResponse` and `newOrderResponse`.
    pub fn to_json_with_data(&self, data: &serde_json::Value) -> String {
        let mut out = self.to_json();
        out.pop(); // the closing brace
        out.push_str(",\"data\":");
        out.push_str(&data.to_string());
        out.push('}');
        out
    }

    /// True when the request might have been executed anyway (5xx): clients
    /// must treat the outcome as unknown, not as a failure.
    pub fn is_server_side(&self) -> bool {
        self.http_status >= 500
    }

    // ---- 10xx: general server or network issues ----

    /// -1000 UNKNOWN.
    pub fn unknown() -> Self {
        Self::new(
            -1000,
            "An unknown error occurred while processing the request.",
            INTERNAL,
        )
    }

    /// -1001 DISCONNECTED.
    pub fn disconnected() -> Self {
        Self::new(
            -1001,
            "Internal error; unable to process your request. Please try again.",
            INTERNAL,
        )
    }

    /// -1002 UNAUTHORIZED.
    pub fn unauthorized() -> Self {
        Self::new(
            -1002,
            "You are not authorized to execute this request.",
            UNAUTHORIZED,
        )
    }

    /// -1003 TOO_MANY_REQUESTS, generic form (also used when the rate
    /// limiter cannot track another client).
    pub fn too_many_requests_queued() -> Self {
        Self::new(-1003, "Too many requests queued.", TOO_MANY_REQUESTS)
    }

    /// -1003 TOO_MANY_REQUESTS for a request-weight window, e.g. `limit` 6000
    /// per `interval_num` 1 `interval` "MINUTE".
    pub fn too_much_request_weight(limit: u64, interval_num: u32, interval: &str) -> Self {
        Self::new(
            -1003,
            format!(
                "Too much request weight used; current limit is {limit} request weight per \
                 {interval_num} {interval}. Please use WebSocket Streams for live updates to \
                 avoid polling the API."
            ),
            TOO_MANY_REQUESTS,
        )
    }

    /// -1003 with HTTP 418: the IP is auto-banned until `until_ms` (epoch
    /// ms, as Binance prints it).
    pub fn ip_banned(until_ms: u64) -> Self {
        Self::new(
            -1003,
            format!(
                "Way too much request weight used; IP banned until {until_ms}. Please use \
                 WebSocket Streams for live updates to avoid bans."
            ),
            IM_A_TEAPOT,
        )
    }

    /// -1007 TIMEOUT: the engine did not answer in time; execution status
    /// unknown, hence a 5xx.
    pub fn timeout() -> Self {
        Self::new(
            -1007,
            "Timeout waiting for response from backend server. Send status unknown; execution \
             status unknown.",
            UNAVAILABLE,
        )
    }

    /// -1008 SERVER_BUSY: the command ring is full.
    pub fn server_busy() -> Self {
        Self::new(
            -1008,
            "Server is currently overloaded with other requests. Please try again in a few \
             minutes.",
            UNAVAILABLE,
        )
    }

    /// -1013 `"Filter failure: <FILTER>"`.
    pub fn filter_failure(filter: FilterFailure) -> Self {
        Self::bad(-1013, format!("Filter failure: {}", filter.as_str()))
    }

    /// -1014 UNKNOWN_ORDER_COMPOSITION.
    pub fn unsupported_order_composition() -> Self {
        Self::bad(-1014, "Unsupported order combination.")
    }

    /// -1015 TOO_MANY_ORDERS, generic form.
    pub fn too_many_new_orders() -> Self {
        Self::new(-1015, "Too many new orders.", TOO_MANY_REQUESTS)
    }

    /// -1015 TOO_MANY_ORDERS for one order-count window, e.g. 100 per 10
    /// "SECOND".
    pub fn too_many_orders(limit: u64, interval_num: u32, interval: &str) -> Self {
        Self::new(
            -1015,
            format!("Too many new orders; current limit is {limit} orders per {interval_num} {interval}."),
            TOO_MANY_REQUESTS,
        )
    }

    /// -1016 SERVICE_SHUTTING_DOWN.
    pub fn service_shutting_down() -> Self {
        Self::new(-1016, "This service is no longer available.", UNAVAILABLE)
    }

    /// -1020 UNSUPPORTED_OPERATION.
    pub fn unsupported_operation() -> Self {
        Self::bad(-1020, "This operation is not supported.")
    }

    /// -1021 INVALID_TIMESTAMP: older than `recvWindow`.
    pub fn timestamp_outside_recv_window() -> Self {
        Self::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )
    }

    /// -1021 INVALID_TIMESTAMP: 1000 ms or more ahead of the server clock.
    pub fn timestamp_ahead_of_server() -> Self {
        Self::bad(
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        )
    }

    /// -1022 INVALID_SIGNATURE.
    pub fn invalid_signature() -> Self {
        Self::bad(-1022, "Signature for this request is not valid.")
    }

    // ---- 11xx: request issues ----

    /// -1100 ILLEGAL_CHARS, generic form (undecodable input).
    pub fn illegal_chars() -> Self {
        Self::bad(-1100, "Illegal characters found in a parameter.")
    }

    /// -1100 ILLEGAL_CHARS naming the parameter and its legal range.
    pub fn illegal_chars_in(param: &str, legal_range: &str) -> Self {
        Self::bad(
            -1100,
            format!(
                "Illegal characters found in parameter '{param}'; legal range is '{legal_range}'."
            ),
        )
    }

    /// -1101 TOO_MANY_PARAMETERS.
    pub fn too_many_parameters() -> Self {
        Self::bad(-1101, "Too many parameters sent for this endpoint.")
    }

    /// -1101 TOO_MANY_PARAMETERS with counts.
    pub fn too_many_parameters_expected(expected: usize, received: usize) -> Self {
        Self::bad(
            -1101,
            format!("Too many parameters; expected '{expected}' and received '{received}'."),
        )
    }

    /// -1101: the same parameter twice in the query string (or twice in
    /// the body).
    pub fn duplicate_parameter() -> Self {
        Self::bad(-1101, "Duplicate values for a parameter detected.")
    }

    /// -1102 MANDATORY_PARAM_EMPTY_OR_MALFORMED.
    pub fn mandatory_param_missing(param: &str) -> Self {
        Self::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    /// -1102 when one of two alternatives is required (orderId or
    /// origClientOrderId).
    pub fn mandatory_one_of(a: &str, b: &str) -> Self {
        Self::bad(
            -1102,
            format!("Param '{a}' or '{b}' must be sent, but both were empty/null!"),
        )
    }

    /// -1102 for a value above its maximum.
    pub fn value_too_large(param: &str, max: &str) -> Self {
        Self::bad(
            -1102,
            format!("'{param}' contains unexpected value. Cannot be greater than {max}."),
        )
    }

    /// -1103 UNKNOWN_PARAM (the WebSocket API's answer; the REST API
    /// answers -1104, see `unread_parameters`).
    pub fn unknown_param() -> Self {
        Self::bad(-1103, "An unknown parameter was sent.")
    }

    /// -1104 UNREAD_PARAMETERS: what Binance's REST API answers when a
    /// request carries a parameter the endpoint does not know.
    pub fn unread_parameters(read: usize, sent: usize) -> Self {
        Self::bad(
            -1104,
            format!("Not all sent parameters were read; read '{read}' parameter(s) but was sent '{sent}'."),
        )
    }

    /// -1105 PARAM_EMPTY.
    pub fn param_empty(param: &str) -> Self {
        Self::bad(-1105, format!("Parameter '{param}' was empty."))
    }

    /// -1106 PARAM_NOT_REQUIRED.
    pub fn param_not_required(param: &str) -> Self {
        Self::bad(
            -1106,
            format!("Parameter '{param}' sent when not required."),
        )
    }

    /// -1108 PARAM_OVERFLOW.
    pub fn param_overflow(param: &str) -> Self {
        Self::bad(-1108, format!("Parameter '{param}' overflowed."))
    }

    /// -1111 BAD_PRECISION (text since 2023-12-04; it used to be "Precision
    /// is over the maximum defined for this asset.").
    pub fn bad_precision(param: &str) -> Self {
        Self::bad(
            -1111,
            format!("Parameter '{param}' has too much precision."),
        )
    }

    /// -1112 NO_DEPTH.
    pub fn no_depth() -> Self {
        Self::bad(-1112, "No orders on book for symbol.")
    }

    /// -1114 TIF_NOT_REQUIRED.
    pub fn tif_not_required() -> Self {
        Self::bad(-1114, "TimeInForce parameter sent when not required.")
    }

    /// -1115 INVALID_TIF.
    pub fn invalid_tif() -> Self {
        Self::bad(-1115, "Invalid timeInForce.")
    }

    /// -1116 INVALID_ORDER_TYPE.
    pub fn invalid_order_type() -> Self {
        Self::bad(-1116, "Invalid orderType.")
    }

    /// -1117 INVALID_SIDE.
    pub fn invalid_side() -> Self {
        Self::bad(-1117, "Invalid side.")
    }

    /// -1118 EMPTY_NEW_CL_ORD_ID.
    pub fn empty_new_client_order_id() -> Self {
        Self::bad(-1118, "New client order ID was empty.")
    }

    /// -1119 EMPTY_ORG_CL_ORD_ID.
    pub fn empty_orig_client_order_id() -> Self {
        Self::bad(-1119, "Original client order ID was empty.")
    }

    /// -1120 BAD_INTERVAL.
    pub fn bad_interval() -> Self {
        Self::bad(-1120, "Invalid interval.")
    }

    /// -1121 BAD_SYMBOL.
    pub fn invalid_symbol() -> Self {
        Self::bad(-1121, "Invalid symbol.")
    }

    /// -1122 INVALID_SYMBOLSTATUS.
    pub fn invalid_symbol_status() -> Self {
        Self::bad(-1122, "Invalid symbolStatus.")
    }

    /// -1125 INVALID_LISTEN_KEY.
    pub fn invalid_listen_key() -> Self {
        Self::bad(-1125, "This listenKey does not exist.")
    }

    /// -1127 MORE_THAN_XX_HOURS.
    pub fn lookup_interval_too_big(hours: u32) -> Self {
        Self::bad(
            -1127,
            format!("More than {hours} hours between startTime and endTime."),
        )
    }

    /// -1128 OPTIONAL_PARAMS_BAD_COMBO.
    pub fn optional_params_bad_combo() -> Self {
        Self::bad(-1128, "Combination of optional parameters invalid.")
    }

    /// -1128 when two optional parameters must come together.
    pub fn must_both_be_sent(a: &str, b: &str) -> Self {
        Self::bad(
            -1128,
            format!("Combination of optional fields invalid. Recommendation: '{a}' and '{b}' must both be sent."),
        )
    }

    /// -1130 INVALID_PARAMETER.
    pub fn invalid_parameter(param: &str) -> Self {
        Self::bad(
            -1130,
            format!("Data sent for parameter '{param}' is not valid."),
        )
    }

    /// -1131 BAD_RECV_WINDOW (recvWindow above 60000; the text is
    /// Binance's, although 60000 itself is allowed).
    pub fn bad_recv_window() -> Self {
        Self::bad(-1131, "'recvWindow' must be less than 60000.")
    }

    // ---- 20xx: order, key and cancelReplace rejections ----

    /// -2010 NEW_ORDER_REJECTED with one of the engine's messages.
    pub fn new_order_rejected(msg: impl Into<String>) -> Self {
        Self::bad(-2010, msg)
    }

    /// -2010 "Account has insufficient balance for requested action."
    pub fn insufficient_balance() -> Self {
        Self::new_order_rejected("Account has insufficient balance for requested action.")
    }

    /// -2010 "Order would immediately match and take." (LIMIT_MAKER).
    pub fn would_match_and_take() -> Self {
        Self::new_order_rejected("Order would immediately match and take.")
    }

    /// -2010 "Duplicate order sent." (clientOrderId in use).
    pub fn duplicate_order() -> Self {
        Self::new_order_rejected("Duplicate order sent.")
    }

    /// -2010 "Order would trigger immediately." (stop price against the
    /// last price; errors.md's text).
    pub fn order_would_trigger_immediately() -> Self {
        Self::new_order_rejected("Order would trigger immediately.")
    }

    /// -2010 "Market is closed." (symbol not trading).
    pub fn market_closed() -> Self {
        Self::new_order_rejected("Market is closed.")
    }

    /// -2010 "Price * QTY is zero or less."
    pub fn price_qty_zero() -> Self {
        Self::new_order_rejected("Price * QTY is zero or less.")
    }

    /// -2010 "Unsupported order combination" (no trailing period, as in
    /// errors.md).
    pub fn unsupported_order_combination() -> Self {
        Self::new_order_rejected("Unsupported order combination")
    }

    /// -2010 "This account may not place or cancel orders."
    pub fn account_may_not_trade() -> Self {
        Self::new_order_rejected("This account may not place or cancel orders.")
    }

    /// -2011 CANCEL_REJECTED with one of the engine's messages.
    pub fn cancel_rejected(msg: impl Into<String>) -> Self {
        Self::bad(-2011, msg)
    }

    /// -2011 "Unknown order sent.": cancel of an unknown or closed order.
    pub fn unknown_order_sent() -> Self {
        Self::cancel_rejected("Unknown order sent.")
    }

    /// -2011 when neither orderId nor origClientOrderId was sent.
    pub fn cancel_order_invalid() -> Self {
        Self::cancel_rejected("Cancel order is invalid. Check origClOrdId and orderId.")
    }

    /// -2013 NO_SUCH_ORDER: query of an unknown order.
    pub fn no_such_order() -> Self {
        Self::bad(-2013, "Order does not exist.")
    }

    /// -2014 BAD_API_KEY_FMT.
    pub fn bad_api_key_format() -> Self {
        Self::new(-2014, "API-key format invalid.", UNAUTHORIZED)
    }

    /// -2015 REJECTED_MBX_KEY: unknown key, or a key without the permission.
    pub fn rejected_api_key() -> Self {
        Self::new(
            -2015,
            "Invalid API-key, IP, or permissions for action.",
            UNAUTHORIZED,
        )
    }

    /// -2021: cancelReplace where exactly one of cancel and new order
    /// failed. Binance answers 409 ("cancelReplace partially succeeds").
    pub fn cancel_replace_partially_failed() -> Self {
        Self::new(-2021, "Order cancel-replace partially failed.", CONFLICT)
    }

    /// -2022: cancelReplace where both the cancel and the new order failed.
    pub fn cancel_replace_failed() -> Self {
        Self::bad(-2022, "Order cancel-replace failed.")
    }

    /// HTTP 413 for a request whose query plus body exceed the gateway's
    /// bound. Binance has no code of its own for this (its proxy answers),
    /// so it reuses -1101's text: the request carries too much.
    pub fn payload_too_large() -> Self {
        Self::new(
            -1101,
            "Too many parameters sent for this endpoint.",
            PAYLOAD_TOO_LARGE,
        )
    }
}

/// Append `s` as a JSON string literal (quotes included), escaped as
/// serde_json escapes it.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    while let Some(i) = rest.find(|c: char| matches!(c, '"' | '\\') || (c as u32) < 0x20) {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().unwrap_or('\0');
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[(c as usize) >> 4]));
                out.push(char::from(HEX[(c as usize) & 0xf]));
            }
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> serde_json::Value {
        serde_json::from_str(json).expect("valid json")
    }

    #[test]
    fn to_json_shape() {
        let e = BinanceError::invalid_symbol();
        assert_eq!(e.to_json(), r#"{"code":-1121,"msg":"Invalid symbol."}"#);
        assert_eq!(e.http_status, 400);
    }

    #[test]
    fn to_json_escapes_hostile_text() {
        let e = BinanceError::mandatory_param_missing("a\"b\\c\n\u{1}ü\u{2028}");
        let v = parse(&e.to_json());
        assert_eq!(v["code"], -1102);
        assert_eq!(
            v["msg"],
            "Mandatory parameter 'a\"b\\c\n\u{1}ü\u{2028}' was not sent, was empty/null, or malformed."
        );
    }

    #[test]
    fn to_json_with_data_shape() {
        let data = serde_json::json!({
            "cancelResult": "FAILURE",
            "newOrderResult": "NOT_ATTEMPTED",
            "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
            "newOrderResponse": null
        });
        let e = BinanceError::cancel_replace_failed();
        let v = parse(&e.to_json_with_data(&data));
        assert_eq!(v["code"], -2022);
        assert_eq!(v["msg"], "Order cancel-replace failed.");
        assert_eq!(v["data"], data);
        assert_eq!(e.http_status, 400);
        let p = BinanceError::cancel_replace_partially_failed();
        assert_eq!((p.code, p.http_status), (-2021, 409));
        assert_eq!(p.msg, "Order cancel-replace partially failed.");
    }

    #[test]
    fn verbatim_messages() {
        let cases: Vec<(BinanceError, i32, &str)> = vec![
            (BinanceError::unknown(), -1000, "An unknown error occurred while processing the request."),
            (BinanceError::unauthorized(), -1002, "You are not authorized to execute this request."),
            (BinanceError::too_many_requests_queued(), -1003, "Too many requests queued."),
            (
                BinanceError::too_much_request_weight(6000, 1, "MINUTE"),
                -1003,
                "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            ),
            (
                BinanceError::ip_banned(1_700_000_000_000),
                -1003,
                "Way too much request weight used; IP banned until 1700000000000. Please use WebSocket Streams for live updates to avoid bans.",
            ),
            (
                BinanceError::server_busy(),
                -1008,
                "Server is currently overloaded with other requests. Please try again in a few minutes.",
            ),
            (BinanceError::filter_failure(FilterFailure::LotSize), -1013, "Filter failure: LOT_SIZE"),
            (BinanceError::too_many_new_orders(), -1015, "Too many new orders."),
            (
                BinanceError::too_many_orders(100, 10, "SECOND"),
                -1015,
                "Too many new orders; current limit is 100 orders per 10 SECOND.",
            ),
            (BinanceError::timestamp_outside_recv_window(), -1021, "Timestamp for this request is outside of the recvWindow."),
            (BinanceError::timestamp_ahead_of_server(), -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
            (BinanceError::invalid_signature(), -1022, "Signature for this request is not valid."),
            (BinanceError::illegal_chars(), -1100, "Illegal characters found in a parameter."),
            (
                BinanceError::illegal_chars_in("limit", LEGAL_RANGE_INTEGER),
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            ),
            (
                BinanceError::illegal_chars_in("price", LEGAL_RANGE_DECIMAL),
                -1100,
                "Illegal characters found in parameter 'price'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            ),
            (BinanceError::too_many_parameters(), -1101, "Too many parameters sent for this endpoint."),
            (BinanceError::duplicate_parameter(), -1101, "Duplicate values for a parameter detected."),
            (
                BinanceError::mandatory_param_missing("symbol"),
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            ),
            (
                BinanceError::mandatory_one_of("orderId", "origClientOrderId"),
                -1102,
                "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!",
            ),
            (BinanceError::unknown_param(), -1103, "An unknown parameter was sent."),
            (
                BinanceError::unread_parameters(8, 9),
                -1104,
                "Not all sent parameters were read; read '8' parameter(s) but was sent '9'.",
            ),
            (BinanceError::param_empty("symbol"), -1105, "Parameter 'symbol' was empty."),
            (BinanceError::param_not_required("price"), -1106, "Parameter 'price' sent when not required."),
            (BinanceError::param_overflow("orderId"), -1108, "Parameter 'orderId' overflowed."),
            (BinanceError::bad_precision("quantity"), -1111, "Parameter 'quantity' has too much precision."),
            (BinanceError::no_depth(), -1112, "No orders on book for symbol."),
            (BinanceError::tif_not_required(), -1114, "TimeInForce parameter sent when not required."),
            (BinanceError::invalid_tif(), -1115, "Invalid timeInForce."),
            (BinanceError::invalid_order_type(), -1116, "Invalid orderType."),
            (BinanceError::invalid_side(), -1117, "Invalid side."),
            (BinanceError::bad_interval(), -1120, "Invalid interval."),
            (BinanceError::invalid_symbol(), -1121, "Invalid symbol."),
            (BinanceError::optional_params_bad_combo(), -1128, "Combination of optional parameters invalid."),
            (BinanceError::invalid_parameter("side"), -1130, "Data sent for parameter 'side' is not valid."),
            (BinanceError::bad_recv_window(), -1131, "'recvWindow' must be less than 60000."),
            (BinanceError::insufficient_balance(), -2010, "Account has insufficient balance for requested action."),
            (BinanceError::would_match_and_take(), -2010, "Order would immediately match and take."),
            (BinanceError::duplicate_order(), -2010, "Duplicate order sent."),
            (BinanceError::order_would_trigger_immediately(), -2010, "Order would trigger immediately."),
            (BinanceError::unknown_order_sent(), -2011, "Unknown order sent."),
            (BinanceError::no_such_order(), -2013, "Order does not exist."),
            (BinanceError::bad_api_key_format(), -2014, "API-key format invalid."),
            (BinanceError::rejected_api_key(), -2015, "Invalid API-key, IP, or permissions for action."),
        ];
        for (e, code, msg) in cases {
            assert_eq!(e.code, code, "{e}");
            assert_eq!(e.msg, msg, "{e}");
        }
    }

    #[test]
    fn every_filter_name() {
        let all = [
            (FilterFailure::PriceFilter, "PRICE_FILTER"),
            (FilterFailure::PercentPrice, "PERCENT_PRICE"),
            (FilterFailure::LotSize, "LOT_SIZE"),
            (FilterFailure::MinNotional, "MIN_NOTIONAL"),
            (FilterFailure::Notional, "NOTIONAL"),
            (FilterFailure::MarketLotSize, "MARKET_LOT_SIZE"),
            (FilterFailure::MaxNumOrders, "MAX_NUM_ORDERS"),
            (FilterFailure::MaxNumAlgoOrders, "MAX_NUM_ALGO_ORDERS"),
            (
                FilterFailure::ExchangeMaxNumOrders,
                "EXCHANGE_MAX_NUM_ORDERS",
            ),
            (
                FilterFailure::ExchangeMaxNumAlgoOrders,
                "EXCHANGE_MAX_NUM_ALGO_ORDERS",
            ),
        ];
        for (f, name) in all {
            let e = BinanceError::filter_failure(f);
            assert_eq!(e.msg, format!("Filter failure: {name}"));
            assert_eq!((e.code, e.http_status), (-1013, 400));
        }
    }

    #[test]
    fn http_statuses_follow_the_contract() {
        assert_eq!(BinanceError::unauthorized().http_status, 401);
        assert_eq!(BinanceError::bad_api_key_format().http_status, 401);
        assert_eq!(BinanceError::rejected_api_key().http_status, 401);
        assert_eq!(
            BinanceError::too_much_request_weight(1, 1, "MINUTE").http_status,
            429
        );
        assert_eq!(BinanceError::too_many_requests_queued().http_status, 429);
        assert_eq!(BinanceError::too_many_orders(1, 1, "DAY").http_status, 429);
        assert_eq!(BinanceError::too_many_new_orders().http_status, 429);
        assert_eq!(BinanceError::ip_banned(0).http_status, 418);
        assert_eq!(BinanceError::payload_too_large().http_status, 413);
        assert_eq!(BinanceError::server_busy().http_status, 503);
        assert_eq!(BinanceError::timeout().http_status, 503);
        assert_eq!(BinanceError::service_shutting_down().http_status, 503);
        assert_eq!(BinanceError::unknown().http_status, 500);
        assert_eq!(BinanceError::disconnected().http_status, 500);
        assert!(BinanceError::server_busy().is_server_side());
        assert!(!BinanceError::invalid_signature().is_server_side());
        for e in [
            BinanceError::timestamp_outside_recv_window(),
            BinanceError::timestamp_ahead_of_server(),
            BinanceError::invalid_signature(),
            BinanceError::filter_failure(FilterFailure::PriceFilter),
            BinanceError::insufficient_balance(),
            BinanceError::unknown_order_sent(),
            BinanceError::no_such_order(),
            BinanceError::illegal_chars(),
            BinanceError::bad_recv_window(),
            BinanceError::unsupported_order_composition(),
            BinanceError::unsupported_operation(),
            BinanceError::empty_new_client_order_id(),
            BinanceError::empty_orig_client_order_id(),
            BinanceError::invalid_symbol_status(),
            BinanceError::invalid_listen_key(),
            BinanceError::lookup_interval_too_big(24),
            BinanceError::must_both_be_sent("startTime", "endTime"),
            BinanceError::value_too_large("limit", "1000"),
            BinanceError::too_many_parameters_expected(1, 2),
            BinanceError::market_closed(),
            BinanceError::price_qty_zero(),
            BinanceError::unsupported_order_combination(),
            BinanceError::account_may_not_trade(),
            BinanceError::cancel_order_invalid(),
        ] {
            assert_eq!(e.http_status, 400, "{e}");
            assert!(e.code < 0);
            let v = parse(&e.to_json());
            assert_eq!(v["code"], e.code);
            assert_eq!(v["msg"], e.msg.as_str());
        }
    }

    #[test]
    fn display_and_new() {
        let e = BinanceError::new(-1, "x", 400);
        assert_eq!(e.to_string(), "-1 x");
        assert_eq!(e.to_json(), r#"{"code":-1,"msg":"x"}"#);
    }
}
