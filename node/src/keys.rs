//! Which keys verify tokens, and development mode.
//!
//! A node always has an HS256 secret: the file `auth.hs256_secret_file`
//! names, or else the dev key in the data directory (created on first use,
//! so that `iris token` and the node agree). Whether that secret verifies
//! tokens, and whether the node is in development mode (the dev key
//! accepted and the chat demo served, which mints tokens with it), is
//! decided here from the config's shape.

use iris_auth::{KeyStore, VerifierConfig, load_or_create_dev_key, load_secret};
use iris_clock::SharedClock;
use iris_config::Config;
use std::path::PathBuf;

/// Where the HS256 secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The file `auth.hs256_secret_file` names.
    File(PathBuf),
    /// The dev key in this data directory (`auth/dev-hs256.key`).
    DevKey(PathBuf),
}

impl SecretSource {
    /// Reads the secret; the dev key is created if it does not exist yet.
    pub fn load(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            SecretSource::File(path) => load_secret(path)?,
            SecretSource::DevKey(data_dir) => load_or_create_dev_key(data_dir)?,
        })
    }
}

/// Token verification as the config decides it.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Where the HS256 secret comes from.
    pub secret: SecretSource,
    /// Whether the secret verifies tokens (tokens without `kid`).
    pub hs256: bool,
    /// Development mode: a single node with no production key configured,
    /// so tokens are checked against the dev key. Only then is the chat
    /// demo served.
    pub dev_mode: bool,
    /// The JWKS file (keys by `kid`), re-read on reload.
    pub jwks_file: Option<PathBuf>,
    /// Required claims and leeway.
    pub verifier: VerifierConfig,
}

impl AuthSettings {
    /// The decisions `cfg` implies.
    pub fn from_config(cfg: &Config) -> Self {
        let a = &cfg.auth;
        Self {
            secret: match &a.hs256_secret_file {
                Some(path) => SecretSource::File(path.clone()),
                None => SecretSource::DevKey(cfg.data_dir()),
            },
            // With a JWKS file, the dev key stays out unless a secret file
            // is named explicitly: whoever can read the data dir must not
            // mint tokens.
            hs256: a.jwks_file.is_none() || a.hs256_secret_file.is_some(),
            // Never in a region, whatever its keys.
            dev_mode: cfg.cluster.is_none() && a.jwks_file.is_none() && a.hs256_secret_file.is_none(),
            jwks_file: a.jwks_file.clone(),
            verifier: VerifierConfig {
                issuer: a.issuer.clone(),
                audience: a.audience.clone(),
                leeway_secs: a.leeway_secs,
            },
        }
    }

    /// The key store verifying tokens; `secret` is what [`SecretSource::load`]
    /// read. Reads the JWKS file.
    pub fn key_store(&self, secret: Vec<u8>, clock: SharedClock) -> anyhow::Result<KeyStore> {
        let hs256 = self.hs256.then_some(secret);
        Ok(KeyStore::new(hs256, self.jwks_file.clone(), self.verifier.clone(), clock)?)
    }
}
