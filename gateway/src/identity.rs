//! Identity read model: users (name, password hash, status, roles, KYC,
//! login lockout) and active API keys, maintained from engine events on the
//! publisher thread and read by the HTTP handlers (login, signature checks,
//! RBAC). Built from the recovered engine at startup, then kept current by
//! events.
//!
//! HMAC API secrets are stored encrypted in the engine state (and so in the
//! journal and snapshots); this view decrypts them with the server's secret
//! key, once, when it is built or when the key's event arrives, and keeps
//! them only in memory as a ready-to-use [`SigningKey`].

use engine::fxhash::FxHashMap;
use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use engine::{ApiKey, ApiKeyKind, Engine, Event, UserId, UserStatus};

use crate::auth::SecretCipher;
use crate::binance::sign::SigningKey;

#[derive(Debug, Clone)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub status: UserStatus,
    /// `engine::roles` bits.
    pub roles: u32,
    pub kyc_level: u8,
    /// Consecutive failed password logins.
    pub failed_logins: u32,
    /// Password login refused before this time (ms; 0 = never locked).
    pub locked_until_ms: u64,
}

impl UserView {
    /// Is password login locked at `now_ms`?
    pub fn locked_at(&self, now_ms: u64) -> bool {
        now_ms < self.locked_until_ms
    }
}

/// An active API key as the signed endpoints need it.
#[derive(Debug, Clone)]
pub struct ApiKeyView {
    pub id: u64,
    pub user: UserId,
    pub api_key: String,
    pub label: String,
    /// `engine::api_key_perms` bits (READ=1, TRADE=2, WITHDRAW=4).
    pub permissions: u8,
    pub kind: ApiKeyKind,
    /// HMAC secret (decrypted) or Ed25519 public key.
    pub signing: SigningKey,
    pub created_ms: u64,
}

#[derive(Debug, Default)]
pub struct IdentityView {
    pub users: FxHashMap<UserId, UserView>,
    /// Lower-cased username -> id.
    pub by_name: HashMap<String, UserId>,
    /// Lower-cased email -> id.
    pub by_email: HashMap<String, UserId>,
    /// Active, usable API keys by identifier.
    api_keys: HashMap<String, ApiKeyView>,
    /// Each user's active key identifiers, by key id.
    keys_of: HashMap<UserId, BTreeMap<u64, String>>,
    /// Ids of active keys whose material could not be turned into a signing
    /// key (HMAC without the right server key); they cannot authenticate.
    unusable: Vec<u64>,
    cipher: Option<SecretCipher>,
    pub last_seq: u64,
}

impl IdentityView {
    /// Without the server secret key: HMAC keys are listed as unusable.
    pub fn from_engine(e: &Engine) -> IdentityView {
        Self::build(e, None)
    }

    /// The view the server runs: HMAC secrets decrypted with `cipher`.
    pub fn with_secret_key(e: &Engine, cipher: SecretCipher) -> IdentityView {
        Self::build(e, Some(cipher))
    }

    fn build(e: &Engine, cipher: Option<SecretCipher>) -> IdentityView {
        let mut v = IdentityView {
            last_seq: e.last_seq(),
            cipher,
            ..IdentityView::default()
        };
        for u in e.users().iter().skip(1) {
            v.insert(UserView {
                id: u.id,
                username: u.username.clone(),
                email: u.email.clone(),
                password_hash: u.password_hash.clone(),
                status: u.status,
                roles: u.roles,
                kyc_level: u.kyc_level,
                failed_logins: u.failed_logins,
                locked_until_ms: u.locked_until_ms,
            });
            for k in &u.api_keys {
                v.add_key(u.id, k);
            }
        }
        v
    }

    fn insert(&mut self, u: UserView) {
        self.by_name.insert(u.username.to_ascii_lowercase(), u.id);
        if !u.email.is_empty() {
            self.by_email.insert(u.email.to_ascii_lowercase(), u.id);
        }
        self.users.insert(u.id, u);
    }

    fn signing_key(&self, k: &ApiKey) -> Option<SigningKey> {
        match k.kind {
            ApiKeyKind::Hmac => {
                let secret = self
                    .cipher
                    .as_ref()?
                    .decrypt(&k.secret, k.api_key.as_bytes())
                    .ok()?;
                Some(SigningKey::hmac(&secret))
            }
            ApiKeyKind::Ed25519 => {
                let raw: [u8; 32] = k.secret.as_slice().try_into().ok()?;
                VerifyingKey::from_bytes(&raw).ok().map(SigningKey::Ed25519)
            }
        }
    }

    fn add_key(&mut self, user: UserId, k: &ApiKey) {
        self.keys_of
            .entry(user)
            .or_default()
            .insert(k.id, k.api_key.clone());
        match self.signing_key(k) {
            Some(signing) => {
                self.api_keys.insert(
                    k.api_key.clone(),
                    ApiKeyView {
                        id: k.id,
                        user,
                        api_key: k.api_key.clone(),
                        label: k.label.clone(),
                        permissions: k.permissions,
                        kind: k.kind,
                        signing,
                        created_ms: k.created_ms,
                    },
                );
            }
            None => {
                // Never log the material itself.
                tracing::error!(
                    key_id = k.id,
                    user = user.0,
                    "API key material cannot be used (wrong MX_SECRET_KEY?); the key cannot authenticate"
                );
                self.unusable.push(k.id);
            }
        }
    }

    fn remove_key(&mut self, user: UserId, id: u64, api_key: &str) {
        self.api_keys.remove(api_key);
        if let Some(m) = self.keys_of.get_mut(&user) {
            m.remove(&id);
        }
        self.unusable.retain(|x| *x != id);
    }

    pub fn user(&self, id: UserId) -> Option<&UserView> {
        self.users.get(&id)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&UserView> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .and_then(|id| self.users.get(id))
    }

    pub fn user_by_email(&self, email: &str) -> Option<&UserView> {
        self.by_email
            .get(&email.to_ascii_lowercase())
            .and_then(|id| self.users.get(id))
    }

    /// An active API key that can authenticate requests.
    pub fn api_key(&self, api_key: &str) -> Option<&ApiKeyView> {
        self.api_keys.get(api_key)
    }

    /// A user's usable active keys, oldest first.
    pub fn api_keys_of(&self, user: UserId) -> Vec<&ApiKeyView> {
        self.keys_of
            .get(&user)
            .map(|m| m.values().filter_map(|k| self.api_keys.get(k)).collect())
            .unwrap_or_default()
    }

    /// Ids of active keys that cannot authenticate (see `from_engine`).
    pub fn unusable_api_keys(&self) -> &[u64] {
        &self.unusable
    }

    /// Does any user hold a role in `role_bits`?
    pub fn any_user_with_role(&self, role_bits: u32) -> bool {
        self.users.values().any(|u| u.roles & role_bits != 0)
    }

    /// The events this view applies (the publisher takes its write lock
    /// only for commands that have one; `apply` filters with it too, so the
    /// two cannot disagree).
    pub fn wants(ev: &Event) -> bool {
        matches!(
            ev,
            Event::UserCreated { .. }
                | Event::UserStatusChanged { .. }
                | Event::UserRolesChanged { .. }
                | Event::KycLevelSet { .. }
                | Event::ApiKeyCreated { .. }
                | Event::ApiKeyRevoked { .. }
                | Event::LoginRecorded { .. }
        )
    }

    pub fn apply(&mut self, seq: u64, events: &[Event]) {
        self.last_seq = seq;
        for ev in events.iter().filter(|e| Self::wants(e)) {
            match ev {
                Event::UserCreated {
                    user,
                    username,
                    email,
                    password_hash,
                    roles,
                } => self.insert(UserView {
                    id: *user,
                    username: username.clone(),
                    email: email.clone(),
                    password_hash: password_hash.clone(),
                    status: UserStatus::Active,
                    roles: *roles,
                    kyc_level: 0,
                    failed_logins: 0,
                    locked_until_ms: 0,
                }),
                Event::UserStatusChanged { user, status } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.status = *status;
                    }
                }
                Event::UserRolesChanged { user, roles } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.roles = *roles;
                    }
                }
                Event::KycLevelSet { user, level } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.kyc_level = *level;
                    }
                }
                Event::LoginRecorded {
                    user,
                    failed_logins,
                    locked_until_ms,
                    ..
                } => {
                    if let Some(u) = self.users.get_mut(user) {
                        u.failed_logins = *failed_logins;
                        u.locked_until_ms = *locked_until_ms;
                    }
                }
                Event::ApiKeyCreated {
                    user,
                    id,
                    api_key,
                    label,
                    permissions,
                    kind,
                    secret,
                    created_ms,
                } => {
                    let k = ApiKey {
                        id: *id,
                        api_key: api_key.clone(),
                        label: label.clone(),
                        permissions: *permissions,
                        kind: *kind,
                        secret: secret.clone(),
                        created_ms: *created_ms,
                    };
                    self.add_key(*user, &k);
                }
                Event::ApiKeyRevoked { user, id, api_key } => self.remove_key(*user, *id, api_key),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{api_key_perms, roles, Command};

    fn run(e: &mut Engine, v: Option<&mut IdentityView>, cmd: Command) -> Vec<Event> {
        let mut out = Vec::new();
        let seq = e.last_seq() + 1;
        e.apply(seq, 1_000 + seq, &cmd, &mut out);
        if let Some(v) = v {
            v.apply(seq, &out);
        }
        out
    }

    #[test]
    fn api_keys_are_decrypted_from_events_and_from_recovered_state() {
        let cipher = SecretCipher::new(&[9; 32]);
        let mut e = Engine::new();
        let mut live = IdentityView::with_secret_key(&e, cipher.clone());
        run(
            &mut e,
            Some(&mut live),
            Command::CreateUser {
                username: "alice".into(),
                email: "alice@example.com".into(),
                password_hash: "$argon2id$x".into(),
                roles: roles::TRADER,
            },
        );
        let alice = live.user_by_name("ALICE").unwrap().id;
        let hmac_id = "HmacKey1";
        run(
            &mut e,
            Some(&mut live),
            Command::CreateApiKey {
                user: alice,
                api_key: hmac_id.into(),
                label: "bot".into(),
                permissions: api_key_perms::READ | api_key_perms::TRADE,
                kind: ApiKeyKind::Hmac,
                secret: cipher.encrypt(b"s3cr3t", hmac_id.as_bytes()),
            },
        );
        let ed = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        run(
            &mut e,
            Some(&mut live),
            Command::CreateApiKey {
                user: alice,
                api_key: "EdKey1".into(),
                label: String::new(),
                permissions: api_key_perms::READ,
                kind: ApiKeyKind::Ed25519,
                secret: ed.verifying_key().to_bytes().to_vec(),
            },
        );
        let payload = b"symbol=BTCUSDT&timestamp=1";
        let sig = crate::binance::sign::hmac_sha256_hex(b"s3cr3t", payload);
        for v in [&live, &IdentityView::with_secret_key(&e, cipher.clone())] {
            let k = v.api_key(hmac_id).unwrap();
            assert_eq!(
                (k.user, k.permissions, k.kind),
                (alice, 3, ApiKeyKind::Hmac)
            );
            k.signing.verify(payload, &sig).unwrap();
            assert!(v.api_key("EdKey1").is_some());
            assert_eq!(v.api_keys_of(alice).len(), 2);
            assert!(v.unusable_api_keys().is_empty());
        }
        // Without the right key the HMAC key cannot authenticate.
        let wrong = IdentityView::with_secret_key(&e, SecretCipher::new(&[1; 32]));
        assert!(wrong.api_key(hmac_id).is_none());
        assert_eq!(wrong.unusable_api_keys(), &[1]);
        assert!(IdentityView::from_engine(&e).api_key(hmac_id).is_none());
        // Revocation removes it at once.
        run(
            &mut e,
            Some(&mut live),
            Command::RevokeApiKey {
                user: alice,
                api_key: hmac_id.into(),
            },
        );
        assert!(live.api_key(hmac_id).is_none());
        assert_eq!(live.api_keys_of(alice).len(), 1);
        // Login results reach the view.
        for _ in 0..5 {
            run(
                &mut e,
                Some(&mut live),
                Command::RecordLogin {
                    user: alice,
                    success: false,
                },
            );
        }
        let u = live.user(alice).unwrap();
        assert!(u.locked_until_ms > 0 && u.locked_at(u.locked_until_ms - 1));
        assert!(!u.locked_at(u.locked_until_ms));
        assert!(live.any_user_with_role(roles::TRADER));
        assert!(!live.any_user_with_role(roles::ADMIN));
    }
}
