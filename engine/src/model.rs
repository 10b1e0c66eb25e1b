//! Configuration and state records: assets, pairs, users, balances, orders,
//! deposits and withdrawals. Plain data; the rules live in `engine.rs`.

use crate::decimal::pow10;
use crate::types::*;
use serde::{Deserialize, Serialize};

/// An asset as configured by `AddAsset` / `UpdateAsset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSpec {
    pub symbol: String,
    pub name: String,
    pub decimals: u8,
    pub min_withdraw_units: u64,
    pub withdraw_fee_units: u64,
    /// Per user per UTC day at KYC level 1 (level 2+ gets 10x); 0 = unlimited.
    pub daily_withdraw_limit_units: u64,
    pub confirmations: u32,
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: AssetId,
    pub spec: AssetSpec,
}

/// A trading pair's configuration. Prices are ticks: one tick is
/// `tick_units` quote units per whole base unit (10^base_decimals).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairSpec {
    pub symbol: String,
    pub base: AssetId,
    pub quote: AssetId,
    /// Quote base-units per tick (PRICE_FILTER tickSize).
    pub tick_units: u64,
    /// Base units per lot (LOT_SIZE stepSize).
    pub step_units: u64,
    pub min_qty_units: u64,
    pub max_qty_units: u64,
    /// MARKET_LOT_SIZE maxQty (minQty is `min_qty_units`).
    pub market_max_qty_units: u64,
    /// NOTIONAL minNotional in quote units.
    pub min_notional_units: u64,
    /// NOTIONAL maxNotional in quote units; 0 = none.
    pub max_notional_units: u64,
    pub min_price_ticks: u64,
    pub max_price_ticks: u64,
    /// Fee rates in 1e-8 (0.001 = 100_000).
    pub maker_fee_e8: u64,
    pub taker_fee_e8: u64,
    /// Limit/stop prices must lie within +-pct of the last trade price; 0 = off.
    pub price_band_pct: u32,
    pub status: PairStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    pub id: PairId,
    pub spec: PairSpec,
    /// 10^decimals of the base asset, fixed when the pair is listed.
    pub base_scale: u64,
}

impl Pair {
    pub fn new(id: PairId, spec: PairSpec, base_decimals: u8) -> Pair {
        Pair {
            id,
            spec,
            base_scale: pow10(base_decimals as u32),
        }
    }

    /// Quote units (floor) for `qty` base units at `price` ticks; None on
    /// overflow of u64.
    #[inline]
    pub fn notional(&self, qty: u64, price: u64) -> Option<u64> {
        let v = (qty as u128)
            .checked_mul(price as u128)?
            .checked_mul(self.spec.tick_units as u128)?
            / (self.base_scale as u128);
        u64::try_from(v).ok()
    }

    /// Largest multiple of the step whose notional at `price` fits `budget`.
    #[inline]
    pub fn affordable_qty(&self, budget: u64, price: u64) -> u64 {
        let per_whole = (price as u128) * (self.spec.tick_units as u128);
        if per_whole == 0 {
            return 0;
        }
        // (budget+1) * scale < 2^64 * 10^19 < 2^128: cannot overflow.
        // floor(q * per_whole / scale) <= budget  <=>  q * per_whole < (budget+1) * scale
        let max_q = ((budget as u128 + 1) * self.base_scale as u128 - 1) / per_whole;
        let step = self.spec.step_units.max(1) as u128;
        let q = max_q - max_q % step;
        q.min(u64::MAX as u128) as u64
    }

    /// Fee (ceil, the exchange's favour) on `amount` at `rate_e8`.
    #[inline]
    pub fn fee(amount: u64, rate_e8: u64) -> u64 {
        if rate_e8 == 0 {
            return 0;
        }
        let v = (amount as u128) * (rate_e8 as u128);
        v.div_ceil(FEE_RATE_SCALE as u128) as u64
    }
}

/// Engine-wide limits, changed by `SetLimits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Open orders (including pending stops) per user across all pairs.
    pub max_open_orders_per_user: u32,
    /// Open orders in the whole engine (capacity of the order store).
    pub max_open_orders_total: u32,
    pub max_api_keys_per_user: u32,
    /// Consecutive failed password logins that lock password login
    /// (0 = never lock).
    pub max_failed_logins: u32,
    /// How long such a lock lasts.
    pub lockout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_open_orders_per_user: 1_000,
            max_open_orders_total: 10_000_000,
            max_api_keys_per_user: 30,
            max_failed_logins: 5,
            lockout_ms: 15 * 60 * 1_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: u64,
    pub frozen: u64,
}

/// Per asset totals of what entered and left the system, for conservation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetFlows {
    pub deposited: u128,
    pub withdrawn: u128,
    pub adjusted_in: u128,
    pub adjusted_out: u128,
}

impl AssetFlows {
    /// What the sum of all balances of the asset must equal.
    pub fn expected_supply(&self) -> u128 {
        self.deposited + self.adjusted_in - self.adjusted_out - self.withdrawn
    }
}

/// Role bits (base data roles of the design).
pub mod roles {
    pub const ADMIN: u32 = 1;
    pub const OPERATOR: u32 = 2;
    pub const SUPPORT: u32 = 4;
    pub const AUDITOR: u32 = 8;
    pub const TRADER: u32 = 16;
    pub const ALL: u32 = 31;
    pub const NAMES: [(u32, &str); 5] = [
        (ADMIN, "ADMIN"),
        (OPERATOR, "OPERATOR"),
        (SUPPORT, "SUPPORT"),
        (AUDITOR, "AUDITOR"),
        (TRADER, "TRADER"),
    ];
}

/// API key permission bits (`READ`, `TRADE`, `WITHDRAW` of the design).
pub mod api_key_perms {
    pub const READ: u8 = 1;
    pub const TRADE: u8 = 2;
    pub const WITHDRAW: u8 = 4;
    pub const ALL: u8 = 7;
    pub const NAMES: [(u8, &str); 3] = [(READ, "READ"), (TRADE, "TRADE"), (WITHDRAW, "WITHDRAW")];
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiKeyKind {
    /// HMAC-SHA256: the secret is stored encrypted by the gateway.
    Hmac,
    /// Ed25519: the user's public key is stored (32 raw bytes).
    Ed25519,
}

impl ApiKeyKind {
    pub fn name(self) -> &'static str {
        match self {
            ApiKeyKind::Hmac => "HMAC",
            ApiKeyKind::Ed25519 => "ED25519",
        }
    }
}

/// Longest public API key identifier (ASCII alphanumerics).
pub const API_KEY_MAX_LEN: usize = 64;
/// Longest API key label, in bytes.
pub const API_KEY_LABEL_MAX_LEN: usize = 64;
/// Largest stored HMAC secret (the gateway's ciphertext of it), in bytes.
pub const API_KEY_SECRET_MAX_LEN: usize = 256;
/// An Ed25519 public key, in bytes.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// An active API key. The engine only stores what the gateway computed:
/// the identifier and secret material are generated (and the HMAC secret
/// encrypted) outside, so the engine stays deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// From the engine's counter; never reused.
    pub id: u64,
    pub api_key: String,
    pub label: String,
    /// `api_key_perms` bits.
    pub permissions: u8,
    pub kind: ApiKeyKind,
    /// HMAC: the secret encrypted at rest; Ed25519: the raw public key.
    pub secret: Vec<u8>,
    pub created_ms: u64,
}

impl ApiKey {
    /// The shape rules of `CreateApiKey` (identity and limits aside).
    pub fn valid_shape(
        api_key: &str,
        label: &str,
        permissions: u8,
        kind: ApiKeyKind,
        secret: &[u8],
    ) -> bool {
        let secret_ok = match kind {
            ApiKeyKind::Hmac => (1..=API_KEY_SECRET_MAX_LEN).contains(&secret.len()),
            ApiKeyKind::Ed25519 => secret.len() == ED25519_PUBLIC_KEY_LEN,
        };
        (1..=API_KEY_MAX_LEN).contains(&api_key.len())
            && api_key.bytes().all(|c| c.is_ascii_alphanumeric())
            && label.len() <= API_KEY_LABEL_MAX_LEN
            && permissions != 0
            && permissions & !api_key_perms::ALL == 0
            && secret_ok
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    /// PHC string (argon2id), computed by the gateway.
    pub password_hash: String,
    pub status: UserStatus,
    pub roles: u32,
    pub kyc_level: u8,
    pub created_ms: u64,
    /// Sorted by asset id; an entry appears on first touch of the asset
    /// (users hold few assets, so a small sorted vector beats any map).
    pub balances: Vec<(AssetId, Balance)>,
    pub open_orders: u32,
    /// (asset, utc day, withdrawn that day incl. pending)
    pub withdraw_usage: Vec<(AssetId, u64, u64)>,
    /// Active API keys, by id (creation order).
    pub api_keys: Vec<ApiKey>,
    /// Consecutive failed password logins (since the last success or the
    /// end of the last lock).
    pub failed_logins: u32,
    /// Password login refused before this time (0 = never locked).
    pub locked_until_ms: u64,
}

impl User {
    pub fn balance(&self, asset: AssetId) -> Balance {
        match self.balances.binary_search_by_key(&asset, |(a, _)| *a) {
            Ok(i) => self.balances[i].1,
            Err(_) => Balance::default(),
        }
    }

    /// The balance entry for `asset`, created zeroed on first touch.
    #[inline]
    pub fn balance_mut(&mut self, asset: AssetId) -> &mut Balance {
        let i = match self.balances.binary_search_by_key(&asset, |(a, _)| *a) {
            Ok(i) => i,
            Err(i) => {
                self.balances.insert(i, (asset, Balance::default()));
                i
            }
        };
        &mut self.balances[i].1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    pub pair: PairId,
    pub side: Side,
    pub kind: OrderType,
    pub tif: TimeInForce,
    pub stp: StpMode,
    pub status: OrderStatus,
    /// Limit price in ticks (0 for market and market-stop orders).
    pub price: Price,
    pub stop_price: Price,
    /// Original quantity in base units (0 for market-by-quote orders).
    pub qty: Qty,
    pub filled: Qty,
    /// quoteOrderQty in quote units (0 unless market by quote).
    pub quote_qty: u64,
    /// Cumulative quote traded.
    pub cum_quote: u64,
    /// Units of the spend asset still frozen for this order.
    pub frozen: u64,
    pub client_id: ClientOrderId,
    pub created_ms: u64,
    /// When the order started working (placement, or trigger for stops).
    pub working_ms: u64,
    /// Stop orders: false while waiting for the trigger.
    pub triggered: bool,
}

impl Order {
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.qty.0 - self.filled.0
    }
    /// The asset this order spends (and freezes).
    #[inline]
    pub fn spend_asset(&self, pair: &Pair) -> AssetId {
        match self.side {
            Side::Buy => pair.spec.quote,
            Side::Sell => pair.spec.base,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositStatus {
    Pending,
    Credited,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: u64,
    pub user: UserId,
    pub asset: AssetId,
    pub amount: u64,
    pub tx_hash: String,
    pub confirmations: u32,
    pub required: u32,
    pub status: DepositStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WithdrawalStatus {
    Pending,
    Sent,
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub id: u64,
    pub user: UserId,
    pub asset: AssetId,
    pub amount: u64,
    pub fee: u64,
    pub address: String,
    pub tx_hash: String,
    pub status: WithdrawalStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Identity document of a KYC submission (`kyc_records.document_type`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KycDocumentType {
    Passport,
    IdCard,
    DriversLicense,
    ResidencePermit,
    Other,
}

impl KycDocumentType {
    pub const ALL: [KycDocumentType; 5] = [
        KycDocumentType::Passport,
        KycDocumentType::IdCard,
        KycDocumentType::DriversLicense,
        KycDocumentType::ResidencePermit,
        KycDocumentType::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KycDocumentType::Passport => "PASSPORT",
            KycDocumentType::IdCard => "ID_CARD",
            KycDocumentType::DriversLicense => "DRIVERS_LICENSE",
            KycDocumentType::ResidencePermit => "RESIDENCE_PERMIT",
            KycDocumentType::Other => "OTHER",
        }
    }

    /// The type of a name as [`KycDocumentType::name`] spells it.
    pub fn from_name(name: &str) -> Option<KycDocumentType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KycStatus {
    Pending,
    Approved,
    Rejected,
}

impl KycStatus {
    pub fn name(self) -> &'static str {
        match self {
            KycStatus::Pending => "PENDING",
            KycStatus::Approved => "APPROVED",
            KycStatus::Rejected => "REJECTED",
        }
    }
}

/// Highest KYC level (0 none, 1 basic, 2 verified, 3 advanced).
pub const KYC_MAX_LEVEL: u8 = 3;
/// Largest stored document number (the gateway's ciphertext of it), in bytes.
pub const KYC_DOCUMENT_MAX_LEN: usize = 512;
/// Largest submitted data (JSON object text), in bytes.
pub const KYC_DATA_MAX_LEN: usize = 4096;
/// Longest review notes, in bytes.
pub const KYC_NOTES_MAX_LEN: usize = 1024;

/// One KYC submission and its review. The engine stores what the gateway
/// computed: the document number arrives encrypted (the engine never sees
/// it in clear and never needs to), the data as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KycRecord {
    /// From the engine's counter; never reused.
    pub id: u64,
    pub user: UserId,
    /// Requested level, 1..=`KYC_MAX_LEVEL`; approval sets the user's level to it.
    pub level: u8,
    pub document_type: KycDocumentType,
    /// Ciphertext of the document number (never plaintext).
    pub document_number: Vec<u8>,
    /// A JSON object, as text.
    pub data: String,
    pub status: KycStatus,
    /// Who approved or rejected it (None while pending).
    pub reviewer: Option<UserId>,
    pub notes: String,
    pub created_ms: u64,
    /// When it was reviewed (0 while pending).
    pub reviewed_ms: u64,
}

impl KycRecord {
    /// The shape rules of `SubmitKyc` (identity and the one-pending rule
    /// aside): the level, the ciphertext's size, and data that is bounded
    /// text in braces (the gateway checks it is a JSON object; the engine
    /// has no JSON parser and needs none).
    pub fn valid_level(level: u8) -> bool {
        (1..=KYC_MAX_LEVEL).contains(&level)
    }

    pub fn valid_submission(document_number: &[u8], data: &str) -> bool {
        let d = data.trim();
        (1..=KYC_DOCUMENT_MAX_LEN).contains(&document_number.len())
            && data.len() <= KYC_DATA_MAX_LEN
            && d.starts_with('{')
            && d.ends_with('}')
    }

    /// Review notes: bounded, and a rejection must say why.
    pub fn valid_review(approve: bool, notes: &str) -> bool {
        notes.len() <= KYC_NOTES_MAX_LEN && (approve || !notes.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btcusdt() -> Pair {
        Pair::new(
            PairId(1),
            PairSpec {
                symbol: "BTCUSDT".into(),
                base: AssetId(1),
                quote: AssetId(3),
                tick_units: 1_000_000, // 0.01 USDT
                step_units: 1_000,     // 0.00001 BTC
                min_qty_units: 1_000,
                max_qty_units: 900_000_000_000,
                market_max_qty_units: 900_000_000_000,
                min_notional_units: 500_000_000,
                max_notional_units: 0,
                min_price_ticks: 1,
                max_price_ticks: 100_000_000_000,
                maker_fee_e8: 100_000,
                taker_fee_e8: 100_000,
                price_band_pct: 50,
                status: PairStatus::Trading,
            },
            8,
        )
    }

    #[test]
    fn notional_and_affordable() {
        let p = btcusdt();
        // 0.5 BTC at 30000.00 = 15000 USDT
        assert_eq!(p.notional(50_000_000, 3_000_000), Some(1_500_000_000_000));
        let q = p.affordable_qty(1_500_000_000_000, 3_000_000);
        assert_eq!(q, 50_000_000);
        let q = p.affordable_qty(1_500_000_000_000 - 1, 3_000_000);
        assert_eq!(q, 50_000_000 - 1_000);
        assert!(p.notional(q, 3_000_000).unwrap() < 1_500_000_000_000);
        assert_eq!(p.notional(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn fee_rounds_up() {
        assert_eq!(Pair::fee(1_000, 100_000), 1);
        assert_eq!(Pair::fee(1_001, 100_000), 2);
        assert_eq!(Pair::fee(0, 100_000), 0);
        assert_eq!(Pair::fee(12345, 0), 0);
        assert_eq!(Pair::fee(u64::MAX, FEE_RATE_SCALE), u64::MAX);
    }
}
