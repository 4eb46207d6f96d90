//! Tokens: the JWTs that name a session's user and tenant.
//!
//! This build verifies HS256 tokens (the dev key, or a secret file named in
//! the config). Only the algorithms the verifier is configured for are
//! accepted, so `alg: none` and algorithm confusion are refused; `exp` is
//! required; `sub` and `tenant` must be non-empty strings.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant.
    pub tenant: String,
    /// The user.
    pub user: String,
}

/// A name usable as a tenant or user: 1–128 bytes, no control characters.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

/// Verifies tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
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
    /// An HS256 verifier.
    pub fn hs256(secret: &[u8], cfg: &VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = cfg.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
        }
        match &cfg.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        let c = data.claims;
        if !valid_name(&c.sub) {
            return Err(AuthError::MissingClaim("sub"));
        }
        if !valid_name(&c.tenant) {
            return Err(AuthError::MissingClaim("tenant"));
        }
        Ok(Identity { tenant: c.tenant, user: c.sub })
    }
}

/// Signs tokens (the `iris token` command and tests).
pub struct Signer {
    key: EncodingKey,
}

impl Signer {
    /// An HS256 signer.
    pub fn hs256(secret: &[u8]) -> Self {
        Self { key: EncodingKey::from_secret(secret) }
    }

    /// A token for `user` in `tenant`, valid for `ttl_secs`.
    pub fn token(&self, tenant: &str, user: &str, ttl_secs: u64) -> Result<String, AuthError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims { sub: user.into(), tenant: tenant.into(), exp: now + ttl_secs, iat: Some(now) };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)?)
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
    // Two processes racing on first start: the first rename wins, and both
    // then read the same file.
    if !path.exists() {
        std::fs::rename(&tmp, &path).map_err(io)?;
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
    read_key(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(secret: &[u8]) -> Verifier {
        Verifier::hs256(secret, &VerifierConfig { leeway_secs: 0, ..Default::default() })
    }

    #[test]
    fn signed_tokens_verify() {
        let t = Signer::hs256(b"0123456789abcdef0123456789abcdef").token("acme", "alice", 60).unwrap();
        let id = verifier(b"0123456789abcdef0123456789abcdef").verify(&t).unwrap();
        assert_eq!(id, Identity { tenant: "acme".into(), user: "alice".into() });
    }

    #[test]
    fn wrong_key_expired_and_none_are_refused() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = Signer::hs256(b"another-key-another-key-another-k").token("acme", "alice", 60).unwrap();
        assert!(verifier(key).verify(&t).is_err());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let expired = Claims { sub: "a".into(), tenant: "t".into(), exp: now - 100, iat: None };
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
