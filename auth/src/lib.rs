//! Tokens: the JWTs that name a session's user and tenant.
//!
//! Keys come from a JWKS file (EdDSA/Ed25519, RS256, HS256 keys, each with a
//! `kid`) and/or one HS256 secret (the dev key, or a secret file) used for
//! tokens without a `kid`. A token must name a known key and use exactly
//! that key's algorithm, so `alg: none` and algorithm confusion are refused;
//! `exp` is required, `nbf`, `iss` and `aud` are checked with a leeway;
//! `sub` and `tenant` must be usable names. [`KeyStore::reload`] swaps in a
//! re-read JWKS (key rotation by `kid`) without a restart.
//!
//! Time comes from the [`Clock`](iris_clock::Clock) a verifier or signer
//! is given, never from the system directly: `exp` and `nbf` are checked
//! here against it (the JWT library would read the wall clock itself), so
//! that tests and the simulator can expire tokens by moving a `ManualClock`.

pub mod apikeys;
pub mod budget;
pub mod guard;

use base64::Engine;
use iris_clock::SharedClock;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a token or key was refused. Clients only ever see `unauthorized`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad signature, wrong algorithm, expired, malformed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `sub` or `tenant` missing, empty or not a usable name.
    #[error("token lacks a usable {0}")]
    MissingClaim(&'static str),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("key file {0} holds no key (expected at least 32 bytes, base64)")]
    BadKey(PathBuf),
    /// The JWKS file does not parse, or a key in it is unusable.
    #[error("JWKS {path}: {problem}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The token names no key this node knows.
    #[error("unknown key id")]
    UnknownKey,
    /// The token's algorithm is not its key's algorithm.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
}

/// The claims Iris reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The tenant.
    pub tenant: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Space-separated scopes (`service` for server-to-server APIs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user: String,
    /// Scopes the token grants.
    pub scopes: Vec<String>,
}

impl Identity {
    /// Does the token grant this scope?
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The scope that server-to-server (service) APIs require.
pub const SERVICE_SCOPE: &str = "service";

/// A name usable as a tenant or user: 1–128 bytes, no control characters.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

/// Verifies tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    leeway_secs: u64,
    clock: SharedClock,
}

/// Settings of a verifier.
#[derive(Debug, Clone, Default)]
pub struct VerifierConfig {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Allowed clock skew, seconds.
    pub leeway_secs: u64,
}

impl Verifier {
    /// An HS256 verifier judging `exp` and `nbf` by `clock`.
    pub fn hs256(secret: &[u8], cfg: &VerifierConfig, clock: SharedClock) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256, cfg),
            leeway_secs: cfg.leeway_secs,
            clock,
        }
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let c = jsonwebtoken::decode::<Verified>(token, &self.key, &self.validation)?.claims;
        c.check(self.clock.now_secs(), self.leeway_secs)
    }
}

/// The claims a verifier reads, `nbf` included (checked here, not by the
/// JWT library, which would read the wall clock).
#[derive(Deserialize)]
struct Verified {
    sub: String,
    tenant: String,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

impl Verified {
    /// Checks the times against `now` (as the JWT library would, with the
    /// same leeway both ways) and the names.
    fn check(self, now: u64, leeway: u64) -> Result<Identity, AuthError> {
        if self.exp < now.saturating_sub(leeway) {
            return Err(AuthError::Invalid(jsonwebtoken::errors::ErrorKind::ExpiredSignature.into()));
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::Invalid(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into()));
        }
        if !valid_name(&self.sub) {
            return Err(AuthError::MissingClaim("sub"));
        }
        if !valid_name(&self.tenant) {
            return Err(AuthError::MissingClaim("tenant"));
        }
        Ok(Identity { tenant: self.tenant, user: self.sub, scopes: scopes(self.scope.as_deref()) })
    }
}

struct Key {
    key: DecodingKey,
    alg: Algorithm,
}

struct Keys {
    by_kid: HashMap<String, Key>,
    default: Option<Key>,
}

/// All keys a node accepts tokens from, swappable at run time.
pub struct KeyStore {
    keys: RwLock<Arc<Keys>>,
    jwks: Option<PathBuf>,
    hs256: Option<Vec<u8>>,
    cfg: VerifierConfig,
    clock: SharedClock,
}

fn jwks_err(path: &Path, problem: impl std::fmt::Display) -> AuthError {
    AuthError::Jwks { path: path.to_owned(), problem: problem.to_string() }
}

fn load_jwks(path: &Path) -> Result<HashMap<String, Key>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| jwks_err(path, e))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| jwks_err(path, e))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().ok_or_else(|| jwks_err(path, "every key needs a kid"))?;
        let alg = match jwk.common.key_algorithm {
            Some(a) => Algorithm::try_from(a).map_err(|e| jwks_err(path, format!("{kid}: {e}")))?,
            None => match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => return Err(jwks_err(path, format!("{kid}: name the key's alg"))),
            },
        };
        if !matches!(alg, Algorithm::HS256 | Algorithm::RS256 | Algorithm::EdDSA | Algorithm::ES256) {
            return Err(jwks_err(path, format!("{kid}: algorithm {alg:?} is not accepted")));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| jwks_err(path, format!("{kid}: {e}")))?;
        if out.insert(kid.clone(), Key { key, alg }).is_some() {
            return Err(jwks_err(path, format!("kid {kid} appears twice")));
        }
    }
    Ok(out)
}

impl KeyStore {
    /// Accepts tokens signed with an HS256 secret (tokens without `kid`)
    /// and, when a JWKS file is named, with its keys (by `kid`); judges
    /// `exp` and `nbf` by `clock`.
    pub fn new(
        hs256: Option<Vec<u8>>,
        jwks: Option<PathBuf>,
        cfg: VerifierConfig,
        clock: SharedClock,
    ) -> Result<Self, AuthError> {
        let keys = RwLock::new(Arc::new(Keys { by_kid: HashMap::new(), default: None }));
        let store = Self { keys, jwks, hs256, cfg, clock };
        store.reload()?;
        Ok(store)
    }

    /// Re-reads the JWKS file. On error the old keys stay in use.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let by_kid = match &self.jwks {
            Some(path) => load_jwks(path)?,
            None => HashMap::new(),
        };
        let default = self.hs256.as_ref().map(|s| Key { key: DecodingKey::from_secret(s), alg: Algorithm::HS256 });
        let n = by_kid.len() + usize::from(default.is_some());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Keys { by_kid, default });
        Ok(n)
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)?;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let key = match &header.kid {
            Some(kid) => keys.by_kid.get(kid).ok_or(AuthError::UnknownKey)?,
            None => keys.default.as_ref().ok_or(AuthError::UnknownKey)?,
        };
        if header.alg != key.alg {
            return Err(AuthError::AlgorithmMismatch);
        }
        let validation = validation(key.alg, &self.cfg);
        let c = jsonwebtoken::decode::<Verified>(token, &key.key, &validation)?.claims;
        c.check(self.clock.now_secs(), self.cfg.leeway_secs)
    }
}

fn validation(alg: Algorithm, cfg: &VerifierConfig) -> Validation {
    let mut validation = Validation::new(alg);
    // `exp` and `nbf` are checked against the injected clock
    // (`Verified::check`); the library would read the system's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = cfg.leeway_secs;
    // A configured issuer or audience must be present, not merely
    // correct when present.
    let mut required = vec!["exp", "sub"];
    if cfg.issuer.is_some() {
        required.push("iss");
    }
    if cfg.audience.is_some() {
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
    }
    match &cfg.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

fn scopes(scope: Option<&str>) -> Vec<String> {
    scope.map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// Signs tokens (the `iris token` command, the dev-mode demo and tests).
/// Its `iat` and `exp` come from the system clock unless it is given
/// another ([`Signer::with_clock`]).
pub struct Signer {
    key: EncodingKey,
    header: Header,
    clock: SharedClock,
}

impl Signer {
    /// An HS256 signer (tokens without `kid`).
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            header: Header::new(Algorithm::HS256),
            clock: iris_clock::system(),
        }
    }

    /// An EdDSA (Ed25519) signer from a PKCS#8 DER key, naming `kid`.
    pub fn ed25519(pkcs8_der: &[u8], kid: &str) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        Self { key: EncodingKey::from_ed_der(pkcs8_der), header, clock: iris_clock::system() }
    }

    /// An RS256 signer from a PEM key, naming `kid`.
    pub fn rs256_pem(pem: &[u8], kid: &str) -> Result<Self, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        Ok(Self { key: EncodingKey::from_rsa_pem(pem)?, header, clock: iris_clock::system() })
    }

    /// The same signer, reading the time from `clock` (a node's demo
    /// endpoint signs by the node's clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A token for `user` in `tenant`, valid for `ttl_secs`.
    pub fn token(&self, tenant: &str, user: &str, ttl_secs: u64) -> Result<String, AuthError> {
        let now = self.clock.now_secs();
        let claims =
            Claims { sub: user.into(), tenant: tenant.into(), exp: now + ttl_secs, iat: Some(now), scope: None };
        self.sign(&claims)
    }

    /// A service token for `tenant` (scope `service`), valid for `ttl_secs`.
    pub fn service_token(&self, tenant: &str, name: &str, ttl_secs: u64) -> Result<String, AuthError> {
        let now = self.clock.now_secs();
        let scope = Some(SERVICE_SCOPE.to_owned());
        let claims = Claims { sub: name.into(), tenant: tenant.into(), exp: now + ttl_secs, iat: Some(now), scope };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests of `iss`, `aud`, `nbf`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        Ok(jsonwebtoken::encode(&self.header, claims, &self.key)?)
    }
}

/// Where the dev key lives under a data directory.
pub fn dev_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("dev-hs256.key")
}

fn read_key(path: &Path) -> Result<Vec<u8>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::KeyFile { path: path.into(), source })?;
    let key =
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| AuthError::BadKey(path.into()))?;
    if key.len() < 32 {
        return Err(AuthError::BadKey(path.into()));
    }
    Ok(key)
}

/// Reads an HS256 secret file (base64, at least 32 bytes).
pub fn load_secret(path: &Path) -> Result<Vec<u8>, AuthError> {
    read_key(path)
}

/// Reads the dev key, creating it (random, mode 0600) on first use.
pub fn load_or_create_dev_key(data_dir: &Path) -> Result<Vec<u8>, AuthError> {
    let path = dev_key_path(data_dir);
    if path.exists() {
        return read_key(&path);
    }
    let io = |source| AuthError::KeyFile { path: path.clone(), source };
    let dir = path.parent().expect("dev key path has a parent");
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    // Two processes racing on first start: hard_link refuses to replace an
    // existing file, so the first key stays and both read it.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    // A leftover temp file is harmless; the key is in place either way.
    let _ = std::fs::remove_file(&tmp);
    read_key(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_clock::{Clock, ManualClock};
    use std::time::{SystemTime, UNIX_EPOCH};

    fn verifier(secret: &[u8]) -> Verifier {
        Verifier::hs256(secret, &VerifierConfig { leeway_secs: 0, ..Default::default() }, iris_clock::system())
    }

    #[test]
    fn expiry_and_not_before_follow_the_given_clock() {
        let key = b"0123456789abcdef0123456789abcdef";
        let clock = Arc::new(ManualClock::new(1_000_000_000_000));
        let signer = Signer::hs256(key).with_clock(clock.clone());
        let verifier = Verifier::hs256(key, &VerifierConfig { leeway_secs: 5, ..Default::default() }, clock.clone());
        let t = signer.token("acme", "alice", 60).unwrap();
        assert!(verifier.verify(&t).is_ok());
        clock.advance_ms(65_000);
        assert!(verifier.verify(&t).is_ok(), "expired, but within leeway");
        clock.advance_ms(1_000);
        let refused = verifier.verify(&t);
        assert!(
            matches!(&refused, Err(AuthError::Invalid(e)) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature),
            "{refused:?}"
        );
        // Not before: refused until the clock reaches it (less the leeway).
        let now = clock.now_secs();
        let early =
            signer.sign(&serde_json::json!({"sub": "a", "tenant": "t", "exp": now + 600, "nbf": now + 100})).unwrap();
        assert!(verifier.verify(&early).is_err());
        clock.advance_ms(95_000);
        assert!(verifier.verify(&early).is_ok());
    }

    #[test]
    fn signed_tokens_verify() {
        let t = Signer::hs256(b"0123456789abcdef0123456789abcdef").token("acme", "alice", 60).unwrap();
        let id = verifier(b"0123456789abcdef0123456789abcdef").verify(&t).unwrap();
        assert_eq!(id, Identity { tenant: "acme".into(), user: "alice".into(), scopes: vec![] });
    }

    #[test]
    fn wrong_key_expired_and_none_are_refused() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = Signer::hs256(b"another-key-another-key-another-k").token("acme", "alice", 60).unwrap();
        assert!(verifier(key).verify(&t).is_err());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let expired = Claims { sub: "a".into(), tenant: "t".into(), exp: now - 100, iat: None, scope: None };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &expired, &EncodingKey::from_secret(key)).unwrap();
        assert!(verifier(key).verify(&t).is_err());
        // alg: none, hand-built.
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"a","tenant":"t","exp":{}}}"#, now + 100))
        );
        assert!(verifier(key).verify(&none).is_err());
    }

    #[test]
    fn tenant_claim_is_required() {
        #[derive(Serialize)]
        struct NoTenant {
            sub: String,
            exp: u64,
        }
        let key = b"0123456789abcdef0123456789abcdef";
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoTenant { sub: "a".into(), exp: now + 60 },
            &EncodingKey::from_secret(key),
        )
        .unwrap();
        assert!(verifier(key).verify(&t).is_err());
    }

    #[test]
    fn dev_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_dev_key(dir.path()).unwrap();
        let b = load_or_create_dev_key(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }
}

#[cfg(test)]
mod keystore_tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::time::{SystemTime, UNIX_EPOCH};

    struct Ed {
        der: Vec<u8>,
        jwk: serde_json::Value,
    }

    fn ed25519(kid: &str) -> Ed {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let x = URL_SAFE_NO_PAD.encode(kp.public_key_raw());
        Ed {
            der: kp.serialize_der(),
            jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA"}),
        }
    }

    fn write_jwks(path: &Path, keys: &[&serde_json::Value]) {
        std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    }

    fn cfg() -> VerifierConfig {
        VerifierConfig { issuer: None, audience: None, leeway_secs: 5 }
    }

    #[test]
    fn eddsa_and_rs256_by_kid_and_hs256_without() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let ed = ed25519("ed-1");
        let rsa: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/rs256-test-jwks.json")).unwrap();
        write_jwks(&jwks, &[&ed.jwk, &rsa["keys"][0]]);
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let store = KeyStore::new(Some(secret.clone()), Some(jwks), cfg(), iris_clock::system()).unwrap();
        let t = Signer::ed25519(&ed.der, "ed-1").token("acme", "alice", 60).unwrap();
        assert_eq!(store.verify(&t).unwrap().user, "alice");
        let pem = include_bytes!("../tests/fixtures/rs256-test-key.pem");
        let t = Signer::rs256_pem(pem, "rsa-1").unwrap().token("acme", "bob", 60).unwrap();
        assert_eq!(store.verify(&t).unwrap().user, "bob");
        let t = Signer::hs256(&secret).token("acme", "carol", 60).unwrap();
        assert_eq!(store.verify(&t).unwrap().user, "carol");
    }

    #[test]
    fn unknown_kid_wrong_alg_and_forged_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let ed = ed25519("ed-1");
        write_jwks(&jwks, &[&ed.jwk]);
        let store = KeyStore::new(None, Some(jwks), cfg(), iris_clock::system()).unwrap();
        let other = ed25519("ed-1");
        let forged = Signer::ed25519(&other.der, "ed-1").token("acme", "alice", 60).unwrap();
        assert!(store.verify(&forged).is_err(), "signed by another key with the same kid");
        let unknown = Signer::ed25519(&ed.der, "ed-9").token("acme", "alice", 60).unwrap();
        assert!(matches!(store.verify(&unknown), Err(AuthError::UnknownKey)));
        // An HS256 token naming the EdDSA key's kid (algorithm confusion).
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("ed-1".into());
        let claims = Claims { sub: "a".into(), tenant: "t".into(), exp: u64::MAX / 2, iat: None, scope: None };
        let confused = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"x")).unwrap();
        assert!(matches!(store.verify(&confused), Err(AuthError::AlgorithmMismatch)));
        let no_kid = Signer::hs256(b"0123456789abcdef0123456789abcdef").token("acme", "a", 60).unwrap();
        assert!(matches!(store.verify(&no_kid), Err(AuthError::UnknownKey)), "no HS256 secret configured");
    }

    #[test]
    fn rotation_by_kid_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let (k1, k2) = (ed25519("k1"), ed25519("k2"));
        write_jwks(&jwks, &[&k1.jwk]);
        let store = KeyStore::new(None, Some(jwks.clone()), cfg(), iris_clock::system()).unwrap();
        let t1 = Signer::ed25519(&k1.der, "k1").token("acme", "a", 60).unwrap();
        let t2 = Signer::ed25519(&k2.der, "k2").token("acme", "a", 60).unwrap();
        assert!(store.verify(&t1).is_ok());
        assert!(store.verify(&t2).is_err());
        write_jwks(&jwks, &[&k2.jwk]);
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.verify(&t1).is_err(), "k1 retired");
        assert!(store.verify(&t2).is_ok(), "k2 in service");
        std::fs::write(&jwks, "{broken").unwrap();
        assert!(store.reload().is_err());
        assert!(store.verify(&t2).is_ok(), "a bad file keeps the old keys");
    }

    #[test]
    fn the_store_expires_tokens_by_its_clock() {
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let clock = Arc::new(iris_clock::ManualClock::new(2_000_000_000_000));
        let store = KeyStore::new(Some(secret.clone()), None, cfg(), clock.clone()).unwrap();
        let t = Signer::hs256(&secret).with_clock(clock.clone()).token("acme", "a", 60).unwrap();
        assert!(store.verify(&t).is_ok());
        clock.advance_ms(60_000 + 5_000);
        assert!(store.verify(&t).is_ok(), "at exp plus the leeway");
        clock.advance_ms(1_000);
        assert!(store.verify(&t).is_err(), "past it");
    }

    #[test]
    fn iss_aud_nbf_are_checked_with_leeway() {
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let cfg = VerifierConfig {
            issuer: Some("https://auth.example".into()),
            audience: Some("iris".into()),
            leeway_secs: 5,
        };
        let store = KeyStore::new(Some(secret.clone()), None, cfg, iris_clock::system()).unwrap();
        let signer = Signer::hs256(&secret);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = |iss: &str, aud: &str, nbf: u64| serde_json::json!({"sub": "a", "tenant": "t", "exp": now + 60, "iss": iss, "aud": aud, "nbf": nbf});
        assert!(store.verify(&signer.sign(&claims("https://auth.example", "iris", now)).unwrap()).is_ok());
        assert!(store.verify(&signer.sign(&claims("https://evil", "iris", now)).unwrap()).is_err());
        assert!(store.verify(&signer.sign(&claims("https://auth.example", "other", now)).unwrap()).is_err());
        assert!(
            store.verify(&signer.sign(&claims("https://auth.example", "iris", now + 3)).unwrap()).is_ok(),
            "within leeway"
        );
        assert!(store.verify(&signer.sign(&claims("https://auth.example", "iris", now + 600)).unwrap()).is_err());
        let expired = serde_json::json!({"sub": "a", "tenant": "t", "exp": now - 60, "iss": "https://auth.example", "aud": "iris"});
        assert!(store.verify(&signer.sign(&expired).unwrap()).is_err());
        let no_iss = serde_json::json!({"sub": "a", "tenant": "t", "exp": now + 60, "aud": "iris"});
        assert!(store.verify(&signer.sign(&no_iss).unwrap()).is_err(), "a configured issuer is required");
        let no_aud = serde_json::json!({"sub": "a", "tenant": "t", "exp": now + 60, "iss": "https://auth.example"});
        assert!(store.verify(&signer.sign(&no_aud).unwrap()).is_err(), "a configured audience is required");
    }
}
