//! Ingestion API keys: random secrets handed to an app's backend, stored
//! only as SHA-256 hashes: in a region's shared store when it keeps them
//! (Redis), so that every node knows every key, or else one file per key
//! under `data_dir/api-keys/` (files, so that `iris api-key create|revoke`
//! works while a node runs). A node caches lookups for [`CACHE_MS`]: a
//! revoked key stops working on every node within that time.

use crate::AuthError;
use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How long a lookup is trusted.
pub const CACHE_MS: i64 = 2_000;
/// Most cached lookups (hits and misses); beyond, the cache starts over.
const CACHE_MAX: usize = 10_000;
/// Prefix of every key (tells keys apart from JWTs in `Authorization`).
pub const KEY_PREFIX: &str = "iris_";

fn hash_hex(key: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::KeyFile { path: path.to_owned(), source }
}

/// Where keys of a data directory live.
pub fn api_key_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("api-keys")
}

/// A new random key and the hex SHA-256 hash it is stored under (its id
/// is the hash's first 16 characters).
pub fn new_api_key() -> (String, String) {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_hex(&key);
    (key, hash)
}

/// The hash a presented key is stored under, if it looks like a key.
pub fn key_hash(key: &str) -> Option<String> {
    (key.starts_with(KEY_PREFIX) && key.len() <= 128).then(|| hash_hex(key))
}

/// What `revoke` names a key by: the id (a prefix of the hash, at least 16
/// hex characters), or the key itself (hashed here). `None`: neither.
pub fn revoke_prefix(id_or_key: &str) -> Option<String> {
    let prefix = if id_or_key.starts_with(KEY_PREFIX) { hash_hex(id_or_key) } else { id_or_key.to_ascii_lowercase() };
    (prefix.len() >= 16 && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

/// Creates a key for `tenant`; returns the key (shown once) and its id.
pub fn create_api_key(dir: &Path, tenant: &str) -> Result<(String, String), AuthError> {
    let (key, hash) = new_api_key();
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(&hash);
    std::fs::write(&path, format!("{tenant}\n")).map_err(io_err(&path))?;
    Ok((key, hash[..16].to_owned()))
}

/// Revokes the key of `tenant` whose id (or full key) is given. Returns
/// whether a key was revoked.
pub fn revoke_api_key(dir: &Path, tenant: &str, id_or_key: &str) -> Result<bool, AuthError> {
    let Some(prefix) = revoke_prefix(id_or_key) else { return Ok(false) };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let path = entry.path();
            let owner = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            if owner.trim_end() == tenant {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Removes every key file of `tenant`; returns how many went.
pub fn revoke_all_api_keys(dir: &Path, tenant: &str) -> Result<usize, AuthError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut gone = 0;
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let owner = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        if owner.trim_end() == tenant {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            gone += 1;
        }
    }
    Ok(gone)
}

/// Looks keys up for a running node.
pub struct ApiKeys {
    dir: PathBuf,
    cache: Mutex<HashMap<String, (Option<String>, i64)>>,
}

impl ApiKeys {
    /// Keys under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, cache: Mutex::new(HashMap::new()) }
    }

    /// The tenant a key belongs to, if it is a live key (looked up in the
    /// key files).
    pub fn tenant_of(&self, key: &str, now_ms: i64) -> Option<String> {
        let hash = key_hash(key)?;
        if let Some(hit) = self.cached(&hash, now_ms) {
            return hit;
        }
        let tenant = std::fs::read_to_string(self.dir.join(&hash)).ok().map(|t| t.trim_end().to_owned());
        self.remember(hash, tenant.clone(), now_ms);
        tenant
    }

    /// A lookup of `hash` still trusted at `now_ms`: `Some(None)` is a
    /// remembered miss.
    pub fn cached(&self, hash: &str, now_ms: i64) -> Option<Option<String>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(hash).filter(|(_, at)| now_ms - at < CACHE_MS).map(|(tenant, _)| tenant.clone())
    }

    /// Remembers a lookup made elsewhere (the shared store) at `now_ms`.
    pub fn remember(&self, hash: String, tenant: Option<String>, now_ms: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (tenant, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_lookup_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let (key, id) = create_api_key(dir.path(), "acme").unwrap();
        assert!(key.starts_with(KEY_PREFIX));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let stored = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(!stored.contains(&key[KEY_PREFIX.len()..]), "only the hash is stored");
        let keys = ApiKeys::new(dir.path().to_path_buf());
        assert_eq!(keys.tenant_of(&key, 0).as_deref(), Some("acme"));
        assert_eq!(keys.tenant_of("iris_nope", 0), None);
        assert!(!revoke_api_key(dir.path(), "globex", &id).unwrap(), "another tenant cannot revoke it");
        assert!(revoke_api_key(dir.path(), "acme", &id).unwrap());
        assert_eq!(keys.tenant_of(&key, 1).as_deref(), Some("acme"), "cached for a moment");
        assert_eq!(keys.tenant_of(&key, CACHE_MS + 1), None, "then gone");
    }
}
