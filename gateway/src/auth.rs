//! Authentication building blocks of the native API: argon2id password
//! hashing (PHC strings, off the async threads and bounded in concurrency),
//! HS256 JWT access tokens, encryption of API key secrets at rest
//! (ChaCha20-Poly1305), the server keys behind both (configured, or
//! generated once into the data directory with mode 0600), CSPRNG helpers
//! for identifiers and secrets, and the role -> permission matrix of
//! `migrations/README.md` (RBAC checks a permission, never a role name).
//!
//! Invariants: no secret (password, API secret, server key, token) is ever
//! logged or printed by `Debug`; every comparison of a MAC is constant-time;
//! a ciphertext is bound to the API key it belongs to (associated data), so
//! swapping ciphertexts between keys fails authentication.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use engine::{roles, UserId};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::{AuthConfig, Secret};

/// Password policy: length in characters (not bytes).
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Longest bearer token we look at.
pub const MAX_TOKEN_LEN: usize = 4096;
/// File names of generated server keys inside the data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";
pub const JWT_KEY_FILE: &str = "jwt.key";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing is saturated; try again")]
    Busy,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("secret cannot be decrypted (wrong server secret key, or tampered data)")]
    Decrypt,
}

// ----------------------------------------------------------- randomness

/// `N` bytes from the operating system's CSPRNG. A machine without one
/// cannot run an exchange, so failure is fatal.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    b
}

const ALNUM: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` uniformly random ASCII alphanumerics (rejection sampling, no modulo
/// bias): API key identifiers, HMAC secrets, generated passwords.
pub fn random_alnum(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes::<64>() {
            // 248 = 4 * 62: bytes above are dropped so each char is uniform.
            if b < 248 && out.len() < n {
                out.push(ALNUM[(b % 62) as usize] as char);
            }
        }
    }
    out
}

// ---------------------------------------------------------- server keys

/// Decode a 32-byte key given as hex (64 digits) or base64.
pub fn decode_key32(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        BASE64.decode(t).ok()?
    };
    bytes.try_into().ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key stored in `path`, or a new random one written there once (mode
/// 0600, complete or not at all: written aside, fsynced, then linked into
/// place without overwriting).
pub fn load_or_create_key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    use anyhow::Context;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "key file is readable by group or others; chmod 600 it");
                }
            }
            return decode_key32(&text).with_context(|| {
                format!(
                    "{} is damaged (expected 64 hex digits); restore it from a backup",
                    path.display()
                )
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key = random_bytes::<32>();
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{}\n", hex(&key)).as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)?;
        std::fs::remove_file(&tmp)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    match write() {
        Ok(()) => Ok(key),
        // Someone else created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            load_or_create_key_file(path)
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

// ------------------------------------------------- secrets at rest (AEAD)

/// Encrypts API key secrets at rest. Layout: version byte (1), 12-byte
/// random nonce, ciphertext with 16-byte tag; associated data binds it to
/// the API key identifier.
#[derive(Clone)]
pub struct SecretCipher {
    aead: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCipher(<redacted>)")
    }
}

const CIPHER_VERSION: u8 = 1;

impl SecretCipher {
    pub fn new(key: &[u8; 32]) -> SecretCipher {
        SecretCipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<12>();
        let ct = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(CIPHER_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, AuthError> {
        if blob.len() < 1 + 12 + 16 || blob[0] != CIPHER_VERSION {
            return Err(AuthError::Decrypt);
        }
        self.aead
            .decrypt(
                Nonce::from_slice(&blob[1..13]),
                Payload {
                    msg: &blob[13..],
                    aad,
                },
            )
            .map_err(|_| AuthError::Decrypt)
    }
}

// ------------------------------------------------------------------ JWT

type HmacSha256 = Hmac<Sha256>;

/// `{"alg":"HS256","typ":"JWT"}`, base64url.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
pub const JWT_ISSUER: &str = "mini-exchange";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub user: UserId,
    pub iat_s: u64,
    pub exp_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

/// Issues and checks HS256 access tokens (`sub` = user id, `iat`, `exp`).
#[derive(Clone)]
pub struct JwtSigner {
    key: Vec<u8>,
    pub ttl_secs: u64,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtSigner(<redacted>, ttl {}s)", self.ttl_secs)
    }
}

impl JwtSigner {
    pub fn new(key: &[u8], ttl_secs: u64) -> JwtSigner {
        JwtSigner {
            key: key.to_vec(),
            ttl_secs,
        }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn issue(&self, user: UserId, now_s: u64) -> String {
        let claims = serde_json::json!({
            "sub": user.0.to_string(),
            "iat": now_s,
            "exp": now_s.saturating_add(self.ttl_secs),
            "iss": JWT_ISSUER,
        });
        let signing_input = format!("{JWT_HEADER}.{}", B64URL.encode(claims.to_string()));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signing_input}.{}", B64URL.encode(sig))
    }

    /// Check signature (constant time, before reading any claim), algorithm
    /// and expiry.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = B64URL
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        // Only HS256: "none" or an asymmetric algorithm is refused outright.
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Malformed);
        }
        let sig = B64URL.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: serde_json::Value = B64URL
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        let user = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(TokenError::Malformed)?;
        let iat_s = claims
            .get("iat")
            .and_then(|v| v.as_u64())
            .ok_or(TokenError::Malformed)?;
        let exp_s = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or(TokenError::Malformed)?;
        if now_s >= exp_s {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            user: UserId(user),
            iat_s,
            exp_s,
        })
    }
}

// ------------------------------------------------------------ passwords

/// The password policy; `Err` carries the client-facing reason.
pub fn check_password_policy(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err("Password must be at least 8 characters.");
    }
    if n > PASSWORD_MAX_CHARS {
        return Err("Password must be at most 128 characters.");
    }
    Ok(())
}

/// argon2id (v19, the crate's default cost: 19 MiB, 2 passes) into a PHC
/// string. Blocking: call from `spawn_blocking`.
pub fn hash_password_blocking(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Verify against a PHC string (its own parameters); false on any mismatch
/// or malformed hash. Blocking.
pub fn verify_password_blocking(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Runs hashing on the blocking pool, at most `permits` at a time (each
/// hash holds 19 MiB), so a burst of logins cannot exhaust memory or starve
/// the async threads.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<tokio::sync::Semaphore>,
    /// Verified against when the user does not exist, so that answer takes
    /// as long as a wrong password.
    dummy_hash: Arc<str>,
}

impl Passwords {
    pub fn new(permits: usize) -> Result<Passwords, AuthError> {
        let dummy = hash_password_blocking(&random_alnum(24))?;
        Ok(Passwords {
            permits: Arc::new(tokio::sync::Semaphore::new(permits.max(1))),
            dummy_hash: dummy.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = tokio::time::timeout(Duration::from_secs(10), self.permits.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))
    }

    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.run(move || hash_password_blocking(&password)).await?
    }

    /// `phc` None: the user does not exist; a dummy hash is checked anyway.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, AuthError> {
        let exists = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self
            .run(move || verify_password_blocking(&password, &phc))
            .await?;
        Ok(ok && exists)
    }
}

// ----------------------------------------------------------------- RBAC

const A: u32 = roles::ADMIN;
const O: u32 = roles::OPERATOR;
const S: u32 = roles::SUPPORT;
const AU: u32 = roles::AUDITOR;
const T: u32 = roles::TRADER;

/// `migrations/README.md` "Roles and permissions" (seeded by
/// `0009_base_data.sql`): permission -> roles holding it. A unit test keeps
/// the two in step.
pub const PERMISSIONS: [(&str, u32); 32] = [
    ("accounts:adjust", A),
    ("accounts:read", A | O | S | AU | T),
    ("api_keys:read", A | AU | T),
    ("api_keys:write", A | T),
    ("assets:read", A | O | AU | T),
    ("assets:write", A | O),
    ("audit:read", A | AU),
    ("deposits:read", A | O | AU | T),
    ("deposits:write", A | O),
    ("fees:read", A | O | AU | T),
    ("fees:write", A | O),
    ("kyc:read", A | O | S | AU | T),
    ("kyc:review", A | O),
    ("kyc:write", A | T),
    ("notifications:read", A | O | AU | T),
    ("notifications:write", A | O),
    ("orders:cancel_any", A | O),
    ("orders:read", A | O | S | AU | T),
    ("orders:write", A | T),
    ("pairs:read", A | O | AU | T),
    ("pairs:write", A | O),
    ("risk:read", A | O | AU),
    ("risk:write", A | O),
    ("roles:grant", A),
    ("settlement:read", A | O | AU),
    ("settlement:run", A | O),
    ("users:lock", A | O | S),
    ("users:read", A | O | S | AU),
    ("users:write", A),
    ("withdrawals:approve", A | O),
    ("withdrawals:read", A | O | AU | T),
    ("withdrawals:write", A | T),
];

/// Does any of `user_roles` grant `permission`? Unknown permissions: no.
pub fn has_permission(user_roles: u32, permission: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|(p, r)| *p == permission && r & user_roles != 0)
}

pub fn permissions_of(user_roles: u32) -> Vec<&'static str> {
    PERMISSIONS
        .iter()
        .filter(|(_, r)| r & user_roles != 0)
        .map(|(p, _)| *p)
        .collect()
}

pub fn role_names(user_roles: u32) -> Vec<&'static str> {
    roles::NAMES
        .iter()
        .filter(|(bit, _)| user_roles & bit != 0)
        .map(|(_, n)| *n)
        .collect()
}

// ------------------------------------------------------------ all of it

/// What the HTTP handlers need for authentication.
#[derive(Debug, Clone)]
pub struct Auth {
    pub cipher: SecretCipher,
    pub jwt: JwtSigner,
    pub passwords: Passwords,
    pub addresses: AddressDeriver,
}

// ------------------------------------------------------ deposit addresses

/// Deposit addresses without a blockchain: deterministic per (user, asset),
/// an HMAC-SHA256 under a subkey of the server secret key, so they are
/// stable across restarts, unguessable without the key, and the key itself
/// never leaves this process.
#[derive(Clone)]
pub struct AddressDeriver {
    key: [u8; 32],
}

impl std::fmt::Debug for AddressDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressDeriver(<redacted>)")
    }
}

impl AddressDeriver {
    pub fn new(secret_key: &[u8; 32]) -> AddressDeriver {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret_key).expect("any key length");
        mac.update(b"mini-exchange deposit addresses v1");
        AddressDeriver {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// `mx` + 40 lower-case hex digits.
    pub fn address(&self, user: UserId, asset_symbol: &str) -> String {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{}:{asset_symbol}", user.0).as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("mx{}", hex(&digest[..20]))
    }
}

/// The server's secret key: configured (hex or base64 of 32 bytes), else
/// `<data_dir>/secret.key`.
pub fn secret_key(configured: Option<&Secret>, data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    match configured {
        Some(s) => decode_key32(s.expose()).ok_or_else(|| {
            anyhow::anyhow!(
                "MX_SECRET_KEY (auth.secret_key) must be 32 bytes as 64 hex digits or base64"
            )
        }),
        None => load_or_create_key_file(&data_dir.join(SECRET_KEY_FILE)),
    }
}

/// The JWT signing key: configured (at least 32 bytes), else
/// `<data_dir>/jwt.key`.
pub fn jwt_key(configured: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    match configured {
        Some(s) if s.expose().len() >= 32 => Ok(s.expose().as_bytes().to_vec()),
        Some(_) => anyhow::bail!("MX_JWT_SECRET (auth.jwt_secret) must be at least 32 bytes"),
        None => Ok(load_or_create_key_file(&data_dir.join(JWT_KEY_FILE))?.to_vec()),
    }
}

/// Password hashes that may run at once: one fewer than the machine's
/// cores, at least one. A burst of logins then never keeps every core busy,
/// which on a VM costs the order path far more than the share of CPU it
/// takes (the hypervisor then deschedules whole vCPUs: two CPU-bound
/// threads even under SCHED_IDLE gave WS order acks at 40,000/s a p99 of
/// 166-206 ms, one gave 4.7-5.9 ms). Four clients failing logins in a loop
/// at 40,000 orders/s on 2 vCPUs: with 2 permits p99 16.7-39.8 ms, p50
/// 1.8-2.2 ms; with 1, p99 6.8-8.2 ms, p50 0.73-0.78 ms, for 30% fewer
/// logins per second (benches/RESULTS.md, session of 2026-11-27 21:18).
fn hashing_permits(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

impl Auth {
    /// Resolve the server keys (creating them on first start) and prepare
    /// the password hasher.
    pub fn load(cfg: &AuthConfig, data_dir: &Path) -> anyhow::Result<Auth> {
        let secret = secret_key(cfg.secret_key.as_ref(), data_dir)?;
        let jwt = jwt_key(cfg.jwt_secret.as_ref(), data_dir)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            cipher: SecretCipher::new(&secret),
            addresses: AddressDeriver::new(&secret),
            jwt: JwtSigner::new(&jwt, cfg.access_token_ttl_secs),
            passwords: Passwords::new(hashing_permits(cores))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashing_leaves_a_core_to_the_order_path() {
        assert_eq!(hashing_permits(0), 1);
        assert_eq!(hashing_permits(1), 1);
        assert_eq!(hashing_permits(2), 1);
        assert_eq!(hashing_permits(8), 7);
        // The server's hasher is built with that rule.
        let tmp = tempfile::tempdir().unwrap();
        let auth = Auth::load(&AuthConfig::default(), tmp.path()).unwrap();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(
            auth.passwords.permits.available_permits(),
            cores.saturating_sub(1).max(1)
        );
    }

    #[test]
    fn jwt_round_trip_tamper_and_expiry() {
        let j = JwtSigner::new(b"0123456789abcdef0123456789abcdef", 60);
        let t = j.issue(UserId(42), 1_000);
        let c = j.verify(&t, 1_000).unwrap();
        assert_eq!(
            c,
            Claims {
                user: UserId(42),
                iat_s: 1_000,
                exp_s: 1_060
            }
        );
        assert_eq!(j.verify(&t, 1_059).unwrap().user, UserId(42));
        assert_eq!(j.verify(&t, 1_060), Err(TokenError::Expired));
        // Another key, a changed claim, a changed signature, alg none.
        let other = JwtSigner::new(b"another key of at least 32 bytes!", 60);
        assert_eq!(other.verify(&t, 1_000), Err(TokenError::BadSignature));
        let parts: Vec<&str> = t.split('.').collect();
        let forged_claims =
            B64URL.encode(r#"{"sub":"1","iat":1000,"exp":99999999999,"iss":"mini-exchange"}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(j.verify(&forged, 1_000), Err(TokenError::BadSignature));
        let mut sig = B64URL.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], B64URL.encode(sig));
        assert_eq!(j.verify(&bad_sig, 1_000), Err(TokenError::BadSignature));
        let none = format!("{}.{}.", B64URL.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(j.verify(&none, 1_000), Err(TokenError::Malformed));
        for junk in ["", "a.b", "a.b.c.d", "...", &"x".repeat(5000)] {
            assert!(j.verify(junk, 1_000).is_err(), "{junk}");
        }
        assert!(!format!("{j:?}").contains("0123"));
    }

    #[test]
    fn secrets_round_trip_and_tampering_is_detected() {
        let c = SecretCipher::new(&[7; 32]);
        let blob = c.encrypt(b"my hmac secret", b"KEY1");
        assert!(!blob.windows(6).any(|w| w == b"secret"));
        assert_eq!(c.decrypt(&blob, b"KEY1").unwrap(), b"my hmac secret");
        // Fresh nonce each time.
        assert_ne!(c.encrypt(b"my hmac secret", b"KEY1"), blob);
        // Any flipped bit, another key id, another server key: refused.
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x10;
            assert!(c.decrypt(&b, b"KEY1").is_err(), "bit flip at {i}");
        }
        assert!(c.decrypt(&blob, b"KEY2").is_err());
        assert!(SecretCipher::new(&[8; 32]).decrypt(&blob, b"KEY1").is_err());
        assert!(c.decrypt(&blob[..20], b"KEY1").is_err());
        assert!(c.decrypt(&[], b"KEY1").is_err());
        assert_eq!(format!("{c:?}"), "SecretCipher(<redacted>)");
    }

    #[test]
    fn passwords_hash_to_argon2id_phc_and_verify() {
        let h = hash_password_blocking("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password_blocking("correct horse", &h));
        assert!(!verify_password_blocking("correct horsf", &h));
        assert!(!verify_password_blocking(
            "correct horse",
            "not a phc string"
        ));
        // Salted: the same password hashes differently.
        assert_ne!(hash_password_blocking("correct horse").unwrap(), h);
        assert!(check_password_policy("1234567").is_err());
        assert!(check_password_policy("12345678").is_ok());
        assert!(check_password_policy(&"é".repeat(128)).is_ok());
        assert!(check_password_policy(&"a".repeat(129)).is_err());
    }

    #[test]
    fn random_identifiers_are_alphanumeric_and_distinct() {
        let a = random_alnum(64);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, random_alnum(64));
    }

    #[test]
    fn keys_decode_from_hex_or_base64_and_files_are_created_once_0600() {
        assert_eq!(decode_key32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_key32(&BASE64.encode([5u8; 32])), Some([5; 32]));
        assert_eq!(decode_key32("short"), None);
        assert_eq!(decode_key32(&BASE64.encode([5u8; 31])), None);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        let k = load_or_create_key_file(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_key_file(&p).unwrap(), k);
        std::fs::write(&p, "garbage").unwrap();
        assert!(load_or_create_key_file(&p).is_err());
        let configured = Secret::new("cd".repeat(32));
        assert_eq!(
            secret_key(Some(&configured), dir.path()).unwrap(),
            [0xcd; 32]
        );
        assert!(secret_key(Some(&Secret::new("nope")), dir.path()).is_err());
        assert!(jwt_key(Some(&Secret::new("short")), dir.path()).is_err());
    }

    /// The static matrix equals the table in migrations/README.md.
    #[test]
    fn permission_matrix_mirrors_the_migrations() {
        let readme = include_str!("../../migrations/README.md");
        let mut from_doc = Vec::new();
        for line in readme.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 8 || !cells[1].contains(':') {
                continue;
            }
            let name = cells[1].trim_matches('`').to_string();
            let mut mask = 0;
            for (i, bit) in [A, O, S, AU, T].into_iter().enumerate() {
                if cells[2 + i] == "x" {
                    mask |= bit;
                }
            }
            from_doc.push((name, mask));
        }
        let ours: Vec<(String, u32)> = PERMISSIONS
            .iter()
            .map(|(p, r)| (p.to_string(), *r))
            .collect();
        assert_eq!(ours, from_doc);
        assert!(has_permission(roles::ADMIN, "deposits:write"));
        assert!(has_permission(roles::OPERATOR, "deposits:write"));
        assert!(!has_permission(roles::TRADER, "deposits:write"));
        assert!(has_permission(roles::TRADER, "api_keys:write"));
        assert!(!has_permission(roles::ALL, "no:such"));
        assert_eq!(permissions_of(roles::ADMIN).len(), 32);
        assert_eq!(
            role_names(roles::ADMIN | roles::TRADER),
            ["ADMIN", "TRADER"]
        );
    }
}
