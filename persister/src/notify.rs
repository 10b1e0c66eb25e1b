//! In-app notifications: the one derivation, shared by the gateway's read
//! model (live and at recovery) and the persister's `notifications` rows.
//!
//! [`derive()`] maps one journal record (seq, journal time, command, events)
//! to the notifications it produces. It is a pure function of the record and
//! of a [`Catalog`] (asset symbols and decimals, pair symbols, which never
//! change once listed), so a replay derives exactly the same notifications
//! with the same ids: `seq << ROW_ID_SHIFT | index` (index = position among
//! the record's notifications).
//!
//! Titles and bodies are rendered from the built-in [`TEMPLATES`] (seeded
//! into `notification_templates` by `0010_notification_templates.sql` with
//! the same ids, names and texts; a unit test keeps the two equal), unless
//! an admin edited the template: edits are journaled
//! (`Command::SetNotificationTemplate`) and kept as engine state, and the
//! [`Catalog`] hands the newest edit to [`derive()`], so a record after the
//! edit's sequence number renders the new text everywhere (the gateway's
//! read model, the persister's rows, any replay) and a record before it the
//! old. An inactive template produces no notifications. Each template
//! supports a fixed set of placeholders ([`Template::placeholders`]);
//! [`check_placeholders`] refuses text using any other.

use std::borrow::Cow;
use std::collections::BTreeMap;

use engine::*;

use engine::decimal::push_units;

use crate::rows::ROW_ID_SHIFT;

/// A built-in in-app notification template. `{name}` placeholders are
/// replaced by [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// `notification_templates.id`.
    pub id: i64,
    /// `notification_templates.name` (unique).
    pub name: &'static str,
    /// The title (`subject`).
    pub subject: &'static str,
    /// The body (`content`).
    pub content: &'static str,
    /// The `{name}`s [`derive()`] fills for this template.
    pub placeholders: &'static [&'static str],
}

const ORDER_VARS: &[&str] = &[
    "order_id",
    "symbol",
    "status",
    "qty",
    "base",
    "quote_qty",
    "quote",
];
const DEPOSIT_VARS: &[&str] = &["deposit_id", "asset", "amount"];
const WITHDRAWAL_VARS: &[&str] = &[
    "withdrawal_id",
    "asset",
    "amount",
    "fee",
    "address",
    "tx_hash",
];
const KYC_VARS: &[&str] = &["kyc_id", "level", "notes"];
const LOGIN_VARS: &[&str] = &["locked_until", "failures"];
const API_KEY_VARS: &[&str] = &["api_key", "label", "permissions"];

pub const ORDER_FILLED: &str = "order_filled";
pub const ORDER_EXPIRED: &str = "order_expired";
pub const ORDER_CANCELED: &str = "order_canceled";
pub const DEPOSIT_CREDITED: &str = "deposit_credited";
pub const WITHDRAWAL_REQUESTED: &str = "withdrawal_requested";
pub const WITHDRAWAL_SENT: &str = "withdrawal_sent";
pub const WITHDRAWAL_REJECTED: &str = "withdrawal_rejected";
pub const KYC_APPROVED: &str = "kyc_approved";
pub const KYC_REJECTED: &str = "kyc_rejected";
pub const LOGIN_LOCKED: &str = "login_locked";
pub const API_KEY_CREATED: &str = "api_key_created";

/// Every built-in template (type IN_APP). Ids are stable: they are rows of
/// `notification_templates` and the `template_id` of every notification.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: 1,
        name: ORDER_FILLED,
        subject: "Order filled",
        content: "Your order {order_id} on {symbol} was filled: {qty} {base} for {quote_qty} {quote}.",
        placeholders: ORDER_VARS,
    },
    Template {
        id: 2,
        name: ORDER_EXPIRED,
        subject: "Order expired",
        content: "Your order {order_id} on {symbol} ended {status} after filling {qty} {base}.",
        placeholders: ORDER_VARS,
    },
    Template {
        id: 3,
        name: ORDER_CANCELED,
        subject: "Order canceled",
        content: "Your order {order_id} on {symbol} was canceled by the exchange after filling {qty} {base}.",
        placeholders: ORDER_VARS,
    },
    Template {
        id: 4,
        name: DEPOSIT_CREDITED,
        subject: "Deposit credited",
        content: "{amount} {asset} were credited to your account (deposit {deposit_id}).",
        placeholders: DEPOSIT_VARS,
    },
    Template {
        id: 5,
        name: WITHDRAWAL_REQUESTED,
        subject: "Withdrawal requested",
        content: "Your withdrawal {withdrawal_id} of {amount} {asset} (fee {fee}) to {address} awaits approval.",
        placeholders: WITHDRAWAL_VARS,
    },
    Template {
        id: 6,
        name: WITHDRAWAL_SENT,
        subject: "Withdrawal sent",
        content: "Your withdrawal {withdrawal_id} of {amount} {asset} to {address} was sent (transaction {tx_hash}).",
        placeholders: WITHDRAWAL_VARS,
    },
    Template {
        id: 7,
        name: WITHDRAWAL_REJECTED,
        subject: "Withdrawal rejected",
        content: "Your withdrawal {withdrawal_id} of {amount} {asset} was rejected; the funds are available again.",
        placeholders: WITHDRAWAL_VARS,
    },
    Template {
        id: 8,
        name: KYC_APPROVED,
        subject: "Verification approved",
        content: "Your KYC verification {kyc_id} was approved: your level is now {level}.",
        placeholders: KYC_VARS,
    },
    Template {
        id: 9,
        name: KYC_REJECTED,
        subject: "Verification rejected",
        content: "Your KYC verification {kyc_id} (level {level}) was rejected: {notes}",
        placeholders: KYC_VARS,
    },
    Template {
        id: 10,
        name: LOGIN_LOCKED,
        subject: "Password login locked",
        content: "Password login is locked until {locked_until} after {failures} failed attempts.",
        placeholders: LOGIN_VARS,
    },
    Template {
        id: 11,
        name: API_KEY_CREATED,
        subject: "New API key",
        content: "API key {api_key} (\"{label}\", permissions {permissions}) was created.",
        placeholders: API_KEY_VARS,
    },
];

/// The built-in template called `name`.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// The `{key}`s of `text` that look like placeholders (a key of ASCII
/// letters, digits and `_`), in order, found as [`render`] finds them.
pub fn placeholders_in(text: &str) -> Vec<&str> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(close) = after.find('}') {
            let key = &after[..close];
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                keys.push(key);
            }
        }
        rest = after;
    }
    keys
}

/// Whether the built-in template `t` supports every placeholder of `text`;
/// `Err` names the first one it does not.
pub fn check_placeholders<'a>(t: &Template, text: &'a str) -> Result<(), &'a str> {
    match placeholders_in(text)
        .into_iter()
        .find(|k| !t.placeholders.contains(k))
    {
        Some(k) => Err(k),
        None => Ok(()),
    }
}

/// A placeholder's value, written by [`render`] straight into the text (no
/// string per value: notifications are derived for every filled order).
#[derive(Debug, Clone, Copy)]
pub enum Var<'a> {
    Text(&'a str),
    Int(u64),
    /// Asset units with the asset's decimals (`dec`).
    Amount(u128, u8),
    /// An unknown asset or pair, shown as `#id`.
    Id(u32),
}

impl Var<'_> {
    fn push_to(&self, out: &mut String) {
        match *self {
            Var::Text(t) => out.push_str(t),
            Var::Int(n) => push_units(out, u128::from(n), 0),
            Var::Amount(units, decimals) => push_units(out, units, u32::from(decimals)),
            Var::Id(id) => {
                out.push('#');
                push_units(out, u128::from(id), 0);
            }
        }
    }
}

/// `text` with every `{key}` of `vars` replaced by its value, in one pass:
/// a value that itself contains `{key}` is not expanded again. Unknown
/// placeholders stay as they are.
pub fn render(text: &str, vars: &[(&str, Var<'_>)]) -> String {
    // Byte searches: `str::find(char)` compares each candidate through
    // `memcmp`, which was most of the rendering time on the publisher.
    let byte_at = |s: &str, b: u8| s.bytes().position(|c| c == b);
    let mut out = String::with_capacity(text.len() + 48);
    let mut rest = text;
    while let Some(open) = byte_at(rest, b'{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match byte_at(after, b'}').and_then(|close| {
            let key = &after[..close];
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (v, close))
        }) {
            Some((v, close)) => {
                v.push_to(&mut out);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One in-app notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `seq << ROW_ID_SHIFT | index`.
    pub id: u64,
    pub user: UserId,
    pub template_id: i64,
    pub template: &'static str,
    /// A built-in subject without placeholders is the template's own text
    /// (no copy for every fill: "Order filled").
    pub title: Cow<'static, str>,
    pub body: String,
    /// Journal time of the record.
    pub created_ms: u64,
}

impl Notification {
    /// The journal record that produced notification `id`.
    pub fn seq_of(id: u64) -> u64 {
        id >> ROW_ID_SHIFT
    }
}

/// What the derivation needs to know about assets, pairs and edited
/// templates.
pub trait Catalog {
    /// (symbol, decimals).
    fn asset_info(&self, id: AssetId) -> Option<(&str, u8)>;
    /// (symbol, base, quote).
    fn pair_info(&self, id: PairId) -> Option<(&str, AssetId, AssetId)>;
    /// The newest journaled edit of template `name` (None: the built-in
    /// text applies).
    fn template_edit(&self, _name: &str) -> Option<&NotificationTemplate> {
        None
    }
}

impl Catalog for Engine {
    fn asset_info(&self, id: AssetId) -> Option<(&str, u8)> {
        self.asset(id)
            .map(|a| (a.spec.symbol.as_str(), a.spec.decimals))
    }
    fn pair_info(&self, id: PairId) -> Option<(&str, AssetId, AssetId)> {
        self.pair(id).map(|p| {
            (
                p.pair.spec.symbol.as_str(),
                p.pair.spec.base,
                p.pair.spec.quote,
            )
        })
    }
    fn template_edit(&self, name: &str) -> Option<&NotificationTemplate> {
        self.notification_template(name)
    }
}

/// A [`Catalog`] kept from the events themselves (for readers that have no
/// engine, like the gateway's publisher).
#[derive(Debug, Default, Clone)]
pub struct CatalogView {
    assets: BTreeMap<AssetId, (String, u8)>,
    pairs: BTreeMap<PairId, (String, AssetId, AssetId)>,
    templates: BTreeMap<String, NotificationTemplate>,
}

impl CatalogView {
    pub fn from_engine(e: &Engine) -> CatalogView {
        let mut c = CatalogView::default();
        for a in e.assets() {
            c.assets
                .insert(a.id, (a.spec.symbol.clone(), a.spec.decimals));
        }
        for p in e.pairs() {
            let s = &p.pair.spec;
            c.pairs
                .insert(p.pair.id, (s.symbol.clone(), s.base, s.quote));
        }
        for t in e.notification_templates() {
            c.templates.insert(t.name.clone(), t.clone());
        }
        c
    }

    /// Follow listings and updates (call before [`derive()`] for the record).
    pub fn observe(&mut self, events: &[Event]) {
        for ev in events {
            match ev {
                Event::AssetListed(a) | Event::AssetUpdated(a) => {
                    self.assets
                        .insert(a.id, (a.spec.symbol.clone(), a.spec.decimals));
                }
                Event::PairListed(p) | Event::PairUpdated(p) => {
                    let s = &p.spec;
                    self.pairs.insert(p.id, (s.symbol.clone(), s.base, s.quote));
                }
                Event::NotificationTemplateSet(t) => {
                    self.templates.insert(t.name.clone(), (**t).clone());
                }
                _ => {}
            }
        }
    }
}

impl Catalog for CatalogView {
    fn asset_info(&self, id: AssetId) -> Option<(&str, u8)> {
        self.assets.get(&id).map(|(s, d)| (s.as_str(), *d))
    }
    fn pair_info(&self, id: PairId) -> Option<(&str, AssetId, AssetId)> {
        self.pairs.get(&id).map(|(s, b, q)| (s.as_str(), *b, *q))
    }
    fn template_edit(&self, name: &str) -> Option<&NotificationTemplate> {
        self.templates.get(name)
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of journal milliseconds.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Whether `cmd` is `user` ending their own orders (then a CANCELED order
/// needs no notification: they know).
fn own_cancel(cmd: &Command, user: UserId) -> bool {
    match cmd {
        Command::CancelOrder { user: u, .. }
        | Command::CancelAll { user: u, .. }
        | Command::AmendQty { user: u, .. } => *u == user,
        Command::CancelReplace { new, .. } => new.user == user,
        _ => false,
    }
}

/// A notification derived from a record, its text possibly not rendered
/// yet: the gateway's view keeps many a user may never read, and rendering
/// every fill's body was about a quarter of its publisher thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// `seq << ROW_ID_SHIFT | index`.
    pub id: u64,
    pub user: UserId,
    pub template: &'static Template,
    /// Journal time of the record.
    pub created_ms: u64,
    pub text: DraftText,
}

/// The text of a [`Draft`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftText {
    /// An order's end under its built-in template: the values only.
    /// [`Draft::render`] takes the pair's symbol and assets and the assets'
    /// symbols and decimals from the catalog; the engine refuses to change
    /// any of them once listed, and a pair is listed before any order on
    /// it, so the text is the same whenever it is rendered.
    Order {
        order: OrderId,
        pair: PairId,
        status: OrderStatus,
        filled: Qty,
        cum_quote: u64,
    },
    /// Rendered when derived: every other notification, and any under an
    /// edited template (a later edit must not change it).
    Rendered {
        title: Cow<'static, str>,
        body: String,
    },
}

impl Draft {
    /// Title and body (`catalog` as for [`derive()`]).
    pub fn render(&self, catalog: &dyn Catalog) -> (Cow<'static, str>, Cow<'_, str>) {
        match &self.text {
            DraftText::Order {
                order,
                pair,
                status,
                filled,
                cum_quote,
            } => {
                let vars = order_vars(catalog, *order, *pair, *status, *filled, *cum_quote);
                let (title, body) = render_template(self.template, &vars);
                (title, Cow::Owned(body))
            }
            DraftText::Rendered { title, body } => (title.clone(), Cow::Borrowed(body)),
        }
    }

    /// The notification with its text.
    pub fn into_notification(self, catalog: &dyn Catalog) -> Notification {
        let (title, body) = match self.text {
            DraftText::Rendered { title, body } => (title, body),
            DraftText::Order { .. } => {
                let (title, body) = self.render(catalog);
                (title, body.into_owned())
            }
        };
        Notification {
            id: self.id,
            user: self.user,
            template_id: self.template.id,
            template: self.template.name,
            title,
            body,
            created_ms: self.created_ms,
        }
    }
}

/// An unknown asset shows as `#id`.
fn asset_var(catalog: &dyn Catalog, a: AssetId) -> Var<'_> {
    catalog
        .asset_info(a)
        .map_or(Var::Id(a.0), |(s, _)| Var::Text(s))
}

/// Units of asset `a` (8 decimals when unknown).
fn amount_var(catalog: &dyn Catalog, a: AssetId, units: u64) -> Var<'static> {
    Var::Amount(
        u128::from(units),
        catalog.asset_info(a).map_or(8, |(_, d)| d),
    )
}

/// The values of [`ORDER_VARS`] for an order's end.
fn order_vars(
    catalog: &dyn Catalog,
    order: OrderId,
    pair: PairId,
    status: OrderStatus,
    filled: Qty,
    cum_quote: u64,
) -> [(&'static str, Var<'_>); 7] {
    let (symbol, base, quote) = catalog
        .pair_info(pair)
        .map_or((Var::Id(pair.0), AssetId(0), AssetId(0)), |(s, b, q)| {
            (Var::Text(s), b, q)
        });
    [
        ("order_id", Var::Int(order.0)),
        ("symbol", symbol),
        ("status", Var::Text(status.as_str())),
        ("qty", amount_var(catalog, base, filled.0)),
        ("base", asset_var(catalog, base)),
        ("quote_qty", amount_var(catalog, quote, cum_quote)),
        ("quote", asset_var(catalog, quote)),
    ]
}

/// A built-in template's title and body; a subject without placeholders is
/// the template's own text (no copy for every fill: "Order filled").
fn render_template(t: &'static Template, vars: &[(&str, Var<'_>)]) -> (Cow<'static, str>, String) {
    let title = if t.subject.contains('{') {
        Cow::Owned(render(t.subject, vars))
    } else {
        Cow::Borrowed(t.subject)
    };
    (title, render(t.content, vars))
}

/// The in-app notifications record `seq` produces (empty for a rejected
/// command), rendered. `catalog` must know the assets and pairs the record
/// mentions (unknown ones render as their numeric ids, never fail).
pub fn derive(
    catalog: &dyn Catalog,
    seq: u64,
    ts_ms: u64,
    cmd: &Command,
    events: &[Event],
) -> Vec<Notification> {
    let mut out = Vec::new();
    derive_drafts(catalog, seq, ts_ms, cmd, events, |d| {
        out.push(d.into_notification(catalog));
    });
    out
}

/// Numbers the notifications of one record and hands them to the sink.
struct Emitter<F> {
    seq: u64,
    ts_ms: u64,
    index: u64,
    sink: F,
}

impl<F: FnMut(Draft)> Emitter<F> {
    fn emit(&mut self, user: UserId, t: &'static Template, text: DraftText) {
        (self.sink)(Draft {
            id: (self.seq << ROW_ID_SHIFT) | self.index,
            user,
            template: t,
            created_ms: self.ts_ms,
            text,
        });
        self.index += 1;
    }

    /// Rendered now, under the newest edit of template `name` if there is
    /// one (an inactive template produces nothing).
    fn push(
        &mut self,
        catalog: &dyn Catalog,
        user: UserId,
        name: &'static str,
        vars: &[(&str, Var<'_>)],
    ) {
        let Some(t) = template(name) else {
            return;
        };
        debug_assert!(
            vars.iter()
                .map(|(k, _)| *k)
                .eq(t.placeholders.iter().copied()),
            "{name}: the placeholders filled differ from the ones declared"
        );
        let (title, body) = match catalog.template_edit(name) {
            Some(e) if !e.active => return,
            Some(e) => (
                Cow::Owned(render(&e.subject, vars)),
                render(&e.content, vars),
            ),
            None => render_template(t, vars),
        };
        self.emit(user, t, DraftText::Rendered { title, body });
    }
}

/// [`derive()`] without rendering what can wait: each notification, in
/// order, to `sink`.
pub fn derive_drafts(
    catalog: &dyn Catalog,
    seq: u64,
    ts_ms: u64,
    cmd: &Command,
    events: &[Event],
    sink: impl FnMut(Draft),
) {
    if matches!(events.first(), Some(Event::Rejected { .. })) {
        return;
    }
    let asset = |a: AssetId| asset_var(catalog, a);
    let amount = |a: AssetId, units: u64| amount_var(catalog, a, units);
    let mut em = Emitter {
        seq,
        ts_ms,
        index: 0,
        sink,
    };
    for ev in events {
        match ev {
            Event::OrderDone {
                order,
                user,
                pair,
                status,
                filled,
                cum_quote,
            } => {
                let name = match status {
                    OrderStatus::Filled => ORDER_FILLED,
                    OrderStatus::Expired | OrderStatus::ExpiredInMatch => ORDER_EXPIRED,
                    OrderStatus::Canceled if !own_cancel(cmd, *user) => ORDER_CANCELED,
                    _ => continue,
                };
                // Under an edit: rendered now (a later edit must not change
                // it). Under the built-in text: rendered when read.
                if catalog.template_edit(name).is_some() {
                    em.push(
                        catalog,
                        *user,
                        name,
                        &order_vars(catalog, *order, *pair, *status, *filled, *cum_quote),
                    );
                } else if let Some(t) = template(name) {
                    em.emit(
                        *user,
                        t,
                        DraftText::Order {
                            order: *order,
                            pair: *pair,
                            status: *status,
                            filled: *filled,
                            cum_quote: *cum_quote,
                        },
                    );
                }
            }
            Event::Balance(b) => {
                if let BalanceCause::Deposit(d) = b.cause {
                    let credited = b.available_after.saturating_sub(b.available_before);
                    em.push(
                        catalog,
                        b.user,
                        DEPOSIT_CREDITED,
                        &[
                            ("deposit_id", Var::Int(d)),
                            ("asset", asset(b.asset)),
                            ("amount", amount(b.asset, credited)),
                        ],
                    );
                }
            }
            Event::WithdrawalUpdated(w) => {
                let name = match w.status {
                    WithdrawalStatus::Pending => WITHDRAWAL_REQUESTED,
                    WithdrawalStatus::Sent => WITHDRAWAL_SENT,
                    WithdrawalStatus::Rejected => WITHDRAWAL_REJECTED,
                };
                em.push(
                    catalog,
                    w.user,
                    name,
                    &[
                        ("withdrawal_id", Var::Int(w.id)),
                        ("asset", asset(w.asset)),
                        ("amount", amount(w.asset, w.amount)),
                        ("fee", amount(w.asset, w.fee)),
                        ("address", Var::Text(&w.address)),
                        ("tx_hash", Var::Text(&w.tx_hash)),
                    ],
                );
            }
            Event::KycReviewed {
                kyc,
                user,
                status,
                level,
                notes,
                ..
            } => {
                let name = match status {
                    KycStatus::Approved => KYC_APPROVED,
                    KycStatus::Rejected => KYC_REJECTED,
                    KycStatus::Pending => continue,
                };
                em.push(
                    catalog,
                    *user,
                    name,
                    &[
                        ("kyc_id", Var::Int(*kyc)),
                        ("level", Var::Int(u64::from(*level))),
                        ("notes", Var::Text(notes)),
                    ],
                );
            }
            Event::LoginRecorded {
                user,
                success: false,
                failed_logins,
                locked_until_ms,
            } if *locked_until_ms != 0 => {
                // While locked every attempt is rejected, so a recorded
                // failure that leaves a lock is the one that set it.
                em.push(
                    catalog,
                    *user,
                    LOGIN_LOCKED,
                    &[
                        ("locked_until", Var::Text(&utc_text(*locked_until_ms))),
                        ("failures", Var::Int(u64::from(*failed_logins))),
                    ],
                );
            }
            Event::ApiKeyCreated {
                user,
                api_key,
                label,
                permissions,
                ..
            } => {
                let perms: Vec<&str> = api_key_perms::NAMES
                    .iter()
                    .filter(|(bit, _)| permissions & bit != 0)
                    .map(|(_, n)| *n)
                    .collect();
                em.push(
                    catalog,
                    *user,
                    API_KEY_CREATED,
                    &[
                        ("api_key", Var::Text(api_key)),
                        ("label", Var::Text(label)),
                        ("permissions", Var::Text(&perms.join(","))),
                    ],
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTC (id 1, 8 decimals), USDT (id 2, 6 decimals), BTCUSDT (id 1).
    struct Cat;
    impl Catalog for Cat {
        fn asset_info(&self, id: AssetId) -> Option<(&str, u8)> {
            match id.0 {
                1 => Some(("BTC", 8)),
                2 => Some(("USDT", 6)),
                _ => None,
            }
        }
        fn pair_info(&self, id: PairId) -> Option<(&str, AssetId, AssetId)> {
            (id.0 == 1).then_some(("BTCUSDT", AssetId(1), AssetId(2)))
        }
    }

    const U: UserId = UserId(7);
    const SEQ: u64 = 42;
    const TS: u64 = 1_767_225_600_000; // 2026-01-01 00:00:00 UTC

    fn one(cmd: &Command, events: &[Event]) -> Notification {
        let n = derive(&Cat, SEQ, TS, cmd, events);
        assert_eq!(n.len(), 1, "{n:?}");
        let n = n.into_iter().next().unwrap();
        assert_eq!(n.id, SEQ << ROW_ID_SHIFT);
        assert_eq!(Notification::seq_of(n.id), SEQ);
        assert_eq!(n.created_ms, TS);
        assert_eq!(n.user, U);
        assert_eq!(template(n.template).unwrap().id, n.template_id);
        n
    }

    fn cancel_cmd(user: UserId) -> Command {
        Command::CancelOrder {
            user,
            pair: PairId(1),
            target: OrderRef::Id(OrderId(9)),
        }
    }

    fn done(status: OrderStatus) -> Event {
        Event::OrderDone {
            order: OrderId(9),
            user: U,
            pair: PairId(1),
            status,
            filled: Qty(150_000_000),
            cum_quote: 3_000_000,
        }
    }

    fn withdrawal(status: WithdrawalStatus) -> Event {
        Event::WithdrawalUpdated(Withdrawal {
            id: 3,
            user: U,
            asset: AssetId(1),
            amount: 50_000_000,
            fee: 10_000,
            address: "bc1qxyz".into(),
            tx_hash: if status == WithdrawalStatus::Sent {
                "0xabc".into()
            } else {
                String::new()
            },
            status,
            created_ms: TS,
            updated_ms: TS,
        })
    }

    #[test]
    fn order_filled() {
        let n = one(&cancel_cmd(UserId(99)), &[done(OrderStatus::Filled)]);
        assert_eq!(n.template, ORDER_FILLED);
        assert_eq!(n.title, "Order filled");
        // The built-in subject has no placeholder: not copied.
        assert!(matches!(n.title, Cow::Borrowed(_)));
        assert_eq!(
            n.body,
            "Your order 9 on BTCUSDT was filled: 1.50000000 BTC for 3.000000 USDT."
        );
    }

    #[test]
    fn order_expired_and_expired_in_match() {
        for s in [OrderStatus::Expired, OrderStatus::ExpiredInMatch] {
            let n = one(&cancel_cmd(U), &[done(s)]);
            assert_eq!(n.template, ORDER_EXPIRED);
            assert!(n.body.contains(s.as_str()), "{}", n.body);
        }
    }

    #[test]
    fn canceled_by_the_exchange_notifies_but_own_cancels_do_not() {
        let n = one(&cancel_cmd(UserId(1)), &[done(OrderStatus::Canceled)]);
        assert_eq!(n.template, ORDER_CANCELED);
        assert!(n.body.contains("1.50000000 BTC"), "{}", n.body);
        for cmd in [
            cancel_cmd(U),
            Command::CancelAll {
                user: U,
                pair: PairId(1),
            },
        ] {
            assert!(derive(&Cat, SEQ, TS, &cmd, &[done(OrderStatus::Canceled)]).is_empty());
        }
        // NEW / PARTIALLY_FILLED are not endings worth a notification.
        assert!(derive(&Cat, SEQ, TS, &cancel_cmd(U), &[done(OrderStatus::New)]).is_empty());
    }

    #[test]
    fn deposit_credited() {
        let ev = Event::Balance(BalanceChange {
            user: U,
            asset: AssetId(2),
            available_before: 1_000_000,
            available_after: 1_250_000_000,
            frozen_before: 0,
            frozen_after: 0,
            cause: BalanceCause::Deposit(5),
        });
        let n = one(&cancel_cmd(U), &[ev]);
        assert_eq!(n.template, DEPOSIT_CREDITED);
        assert_eq!(
            n.body,
            "1249.000000 USDT were credited to your account (deposit 5)."
        );
    }

    #[test]
    fn withdrawal_requested_sent_rejected() {
        let n = one(&cancel_cmd(U), &[withdrawal(WithdrawalStatus::Pending)]);
        assert_eq!(n.template, WITHDRAWAL_REQUESTED);
        assert!(
            n.body
                .contains("0.50000000 BTC (fee 0.00010000) to bc1qxyz"),
            "{}",
            n.body
        );
        let n = one(&cancel_cmd(U), &[withdrawal(WithdrawalStatus::Sent)]);
        assert_eq!(n.template, WITHDRAWAL_SENT);
        assert!(n.body.contains("(transaction 0xabc)"), "{}", n.body);
        let n = one(&cancel_cmd(U), &[withdrawal(WithdrawalStatus::Rejected)]);
        assert_eq!(n.template, WITHDRAWAL_REJECTED);
    }

    #[test]
    fn kyc_approved_and_rejected() {
        let ev = |status, notes: &str| Event::KycReviewed {
            kyc: 4,
            user: U,
            reviewer: UserId(1),
            status,
            level: 2,
            notes: notes.into(),
            reviewed_ms: TS,
        };
        let n = one(&cancel_cmd(U), &[ev(KycStatus::Approved, "")]);
        assert_eq!(n.template, KYC_APPROVED);
        assert_eq!(
            n.body,
            "Your KYC verification 4 was approved: your level is now 2."
        );
        // A placeholder inside a value is not expanded again.
        let n = one(&cancel_cmd(U), &[ev(KycStatus::Rejected, "blurry {level}")]);
        assert_eq!(n.template, KYC_REJECTED);
        assert!(
            n.body.ends_with("was rejected: blurry {level}"),
            "{}",
            n.body
        );
    }

    #[test]
    fn login_locked_only_when_the_failure_locks() {
        let ev = |success, locked_until_ms| Event::LoginRecorded {
            user: U,
            success,
            failed_logins: 5,
            locked_until_ms,
        };
        let n = one(&cancel_cmd(U), &[ev(false, TS + 900_000)]);
        assert_eq!(n.template, LOGIN_LOCKED);
        assert_eq!(
            n.body,
            "Password login is locked until 2026-01-01 00:15:00 UTC after 5 failed attempts."
        );
        assert!(derive(&Cat, SEQ, TS, &cancel_cmd(U), &[ev(false, 0)]).is_empty());
        assert!(derive(&Cat, SEQ, TS, &cancel_cmd(U), &[ev(true, 0)]).is_empty());
    }

    #[test]
    fn api_key_created() {
        let ev = Event::ApiKeyCreated {
            user: U,
            id: 3,
            api_key: "abcd".into(),
            label: "bot".into(),
            permissions: api_key_perms::READ | api_key_perms::TRADE,
            kind: ApiKeyKind::Hmac,
            secret: vec![1, 2, 3],
            created_ms: TS,
        };
        let n = one(&cancel_cmd(U), &[ev]);
        assert_eq!(n.template, API_KEY_CREATED);
        assert_eq!(
            n.body,
            "API key abcd (\"bot\", permissions READ,TRADE) was created."
        );
        // The secret never reaches a notification.
        assert!(!n.body.contains("[1, 2, 3]"));
    }

    #[test]
    fn ids_count_within_the_record_and_rejections_produce_nothing() {
        let evs = [
            done(OrderStatus::Filled),
            withdrawal(WithdrawalStatus::Pending),
        ];
        let n = derive(&Cat, SEQ, TS, &cancel_cmd(UserId(99)), &evs);
        let ids: Vec<u64> = n.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![SEQ << ROW_ID_SHIFT, (SEQ << ROW_ID_SHIFT) + 1]);
        // Deterministic: the same record derives the same notifications.
        assert_eq!(n, derive(&Cat, SEQ, TS, &cancel_cmd(UserId(99)), &evs));
        let rejected = [Event::Rejected {
            reason: RejectReason::UnknownUser,
        }];
        assert!(derive(&Cat, SEQ, TS, &cancel_cmd(U), &rejected).is_empty());
    }

    #[test]
    fn unknown_assets_render_as_ids() {
        let mut ev = withdrawal(WithdrawalStatus::Rejected);
        if let Event::WithdrawalUpdated(w) = &mut ev {
            w.asset = AssetId(77);
        }
        let n = one(&cancel_cmd(U), &[ev]);
        assert!(n.body.contains("0.50000000 #77"), "{}", n.body);
    }

    #[test]
    fn render_replaces_known_placeholders_once() {
        let v = [("a", Var::Text("x{b}")), ("b", Var::Text("y"))];
        assert_eq!(render("{a}-{b}-{c}-{", &v), "x{b}-y-{c}-{");
    }

    #[test]
    fn the_migration_seeds_exactly_these_templates() {
        let sql = include_str!("../../migrations/0010_notification_templates.sql");
        for t in TEMPLATES {
            let row = format!(
                "({}, '{}', 'IN_APP', '{}',\n     '{}')",
                t.id, t.name, t.subject, t.content
            );
            assert!(sql.contains(&row), "missing or different: {row}");
        }
        assert_eq!(sql.matches("'IN_APP'").count(), TEMPLATES.len());
        let mut ids: Vec<i64> = TEMPLATES.iter().map(|t| t.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), TEMPLATES.len());
    }

    #[test]
    fn utc_text_formats_journal_time() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(TS + 3_723_000), "2026-01-01 01:02:03 UTC");
    }

    /// Cat, plus one edit of `deposit_credited`.
    struct Edited(NotificationTemplate);
    impl Catalog for Edited {
        fn asset_info(&self, id: AssetId) -> Option<(&str, u8)> {
            Cat.asset_info(id)
        }
        fn pair_info(&self, id: PairId) -> Option<(&str, AssetId, AssetId)> {
            Cat.pair_info(id)
        }
        fn template_edit(&self, name: &str) -> Option<&NotificationTemplate> {
            (name == self.0.name).then_some(&self.0)
        }
    }

    fn deposit_event() -> Event {
        Event::Balance(BalanceChange {
            user: U,
            asset: AssetId(2),
            available_before: 0,
            available_after: 2_500_000,
            frozen_before: 0,
            frozen_after: 0,
            cause: BalanceCause::Deposit(5),
        })
    }

    fn edit(active: bool) -> NotificationTemplate {
        NotificationTemplate {
            name: DEPOSIT_CREDITED.into(),
            subject: "Funds in: {asset}".into(),
            content: "+{amount} {asset} (#{deposit_id}) {unknown}".into(),
            active,
            version: 1,
            updated_by: UserId(1),
            updated_ms: TS,
        }
    }

    #[test]
    fn an_edit_renders_its_text_and_an_inactive_template_renders_nothing() {
        let cat = Edited(edit(true));
        let n = derive(&cat, SEQ, TS, &cancel_cmd(U), &[deposit_event()]);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].title, "Funds in: USDT");
        assert_eq!(n[0].body, "+2.500000 USDT (#5) {unknown}");
        assert_eq!(n[0].template_id, 4);
        // Other templates keep their built-in text.
        let n = derive(
            &cat,
            SEQ,
            TS,
            &cancel_cmd(UserId(99)),
            &[done(OrderStatus::Filled)],
        );
        assert_eq!(n[0].title, "Order filled");
        let off = Edited(edit(false));
        assert!(derive(&off, SEQ, TS, &cancel_cmd(U), &[deposit_event()]).is_empty());
        // The index counts only the notifications produced.
        let evs = [deposit_event(), done(OrderStatus::Filled)];
        let n = derive(&off, SEQ, TS, &cancel_cmd(UserId(99)), &evs);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].id, SEQ << ROW_ID_SHIFT);
    }

    /// The gateway's view follows edits from events and from an engine;
    /// the persister's replica (an `Engine`) renders the same text.
    #[test]
    fn catalog_view_and_engine_render_the_same_edit() {
        let mut e = Engine::new();
        let mut out = Vec::new();
        e.apply(
            1,
            TS,
            &Command::CreateUser {
                username: "admin".into(),
                email: String::new(),
                password_hash: "x".into(),
                roles: roles::ADMIN,
            },
            &mut out,
        );
        let mut view = CatalogView::from_engine(&e);
        out.clear();
        let t = edit(true);
        e.apply(
            2,
            TS,
            &Command::SetNotificationTemplate {
                by: UserId(1),
                name: t.name.clone(),
                subject: t.subject.clone(),
                content: t.content.clone(),
                active: true,
            },
            &mut out,
        );
        view.observe(&out);
        let a = derive(&view, 3, TS, &cancel_cmd(U), &[deposit_event()]);
        let b = derive(&e, 3, TS, &cancel_cmd(U), &[deposit_event()]);
        assert_eq!(a[0].title, "Funds in: #2");
        assert_eq!(a, b);
        let restarted = CatalogView::from_engine(&e);
        assert_eq!(
            derive(&restarted, 3, TS, &cancel_cmd(U), &[deposit_event()]),
            a
        );
    }

    /// The gateway keeps drafts and renders them when read: the text is the
    /// one `derive` (the persister's rows) gives, and an order's end under
    /// an edited template keeps the text of the edit in force when it was
    /// derived, whatever the catalog it is read with.
    #[test]
    fn drafts_render_as_derive_does_and_keep_an_edits_text() {
        let mut unknown_pair = done(OrderStatus::Filled);
        if let Event::OrderDone { pair, .. } = &mut unknown_pair {
            *pair = PairId(9);
        }
        let evs = [
            done(OrderStatus::Filled),
            done(OrderStatus::Expired),
            done(OrderStatus::ExpiredInMatch),
            done(OrderStatus::Canceled),
            unknown_pair,
            withdrawal(WithdrawalStatus::Pending),
            deposit_event(),
        ];
        let cmd = cancel_cmd(UserId(99));
        let mut drafts = Vec::new();
        derive_drafts(&Cat, SEQ, TS, &cmd, &evs, |d| drafts.push(d));
        let derived = derive(&Cat, SEQ, TS, &cmd, &evs);
        assert_eq!(drafts.len(), 7);
        assert_eq!(derived.len(), 7);
        for (d, n) in drafts.iter().zip(&derived) {
            // Order ends wait to be rendered; the rest are rendered.
            assert_eq!(
                matches!(d.text, DraftText::Order { .. }),
                d.template.placeholders == ORDER_VARS,
                "{d:?}"
            );
            let (title, body) = d.render(&Cat);
            assert_eq!((title.as_ref(), body.as_ref()), (&*n.title, &*n.body));
            assert_eq!(d.clone().into_notification(&Cat), *n);
        }
        assert!(derived[4].body.contains("on #9"), "{}", derived[4].body);

        let edited = Edited(NotificationTemplate {
            name: ORDER_FILLED.into(),
            subject: "Filled: {symbol}".into(),
            content: "{qty} {base} (order {order_id})".into(),
            ..edit(true)
        });
        // Derived before the edit, read after it: the built-in text.
        let (title, _) = drafts[0].render(&edited);
        assert_eq!(title, "Order filled");
        assert_eq!(drafts[0].render(&edited).1, derived[0].body);
        let mut drafts = Vec::new();
        derive_drafts(&edited, SEQ, TS, &cmd, &evs[..1], |d| drafts.push(d));
        assert!(matches!(drafts[0].text, DraftText::Rendered { .. }));
        let (title, body) = drafts[0].render(&Cat);
        assert_eq!(title, "Filled: BTCUSDT");
        assert_eq!(body, "1.50000000 BTC (order 9)");
        let inactive = Edited(NotificationTemplate {
            name: ORDER_FILLED.into(),
            ..edit(false)
        });
        assert!(derive(&inactive, SEQ, TS, &cmd, &evs[..1]).is_empty());
    }

    #[test]
    fn placeholders_are_checked_against_the_template() {
        for t in TEMPLATES {
            assert_eq!(check_placeholders(t, t.subject), Ok(()), "{}", t.name);
            assert_eq!(check_placeholders(t, t.content), Ok(()), "{}", t.name);
        }
        let dep = template(DEPOSIT_CREDITED).unwrap();
        assert_eq!(check_placeholders(dep, "{amount} of {asset}"), Ok(()));
        assert_eq!(
            check_placeholders(dep, "{amount} {order_id}"),
            Err("order_id")
        );
        // Braces that are not placeholders are text.
        assert_eq!(check_placeholders(dep, "{ x } {} {a-b} {"), Ok(()));
        assert_eq!(placeholders_in("{{amount}} {x}"), vec!["amount", "x"]);
    }
}
