//! Key files: the master key wrapped under passphrases.
//!
//! Why wrapped keys: changing or adding a passphrase re-wraps 64 bytes; the data, encrypted with
//! the master key, is never re-encrypted. Each key file carries its own argon2id parameters.

use serde::{Deserialize, Serialize};

use crate::crypto::{derive_wrapping_key, unwrap_master, wrap_master, KdfParams, MasterKey};
use crate::error::{Error, Result};
use crate::repo::backend::Backend;

/// Key file format version (never reuse).
pub const KEY_VERSION: u32 = 1;

/// On-disk key file (JSON; the secret part is `wrapped`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KeyFile {
    /// Format version.
    pub version: u32,
    /// When the key was added (RFC 3339).
    pub created: String,
    /// Host that added it.
    pub host: String,
    /// User that added it.
    pub user: String,
    /// KDF cost parameters.
    pub kdf: KdfParams,
    /// Salt, hex.
    pub salt: String,
    /// Sealed master key, hex.
    pub wrapped: String,
}

/// A key file and its id (the file name).
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// File name under `keys/`.
    pub id: String,
    /// The parsed file.
    pub file: KeyFile,
}

/// Wraps `master` under `pass` and stores a new key file; returns its id.
pub fn add_key(be: &dyn Backend, master: &MasterKey, pass: &[u8]) -> Result<String> {
    let salt: [u8; 16] = rand::random();
    let kdf = KdfParams::for_new_key();
    let wk = derive_wrapping_key(pass, &salt, kdf)?;
    let file = KeyFile {
        version: KEY_VERSION,
        created: chrono::Utc::now().to_rfc3339(),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        user: std::env::var("USER").unwrap_or_default(),
        kdf,
        salt: hex::encode(salt),
        wrapped: hex::encode(wrap_master(&wk, master)),
    };
    let id = hex::encode(rand::random::<[u8; 8]>());
    let json = serde_json::to_vec_pretty(&file).expect("key file serializes");
    be.put(&format!("keys/{id}"), &json)?;
    Ok(id)
}

/// All key files.
pub fn list_keys(be: &dyn Backend) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for id in be.list("keys")? {
        let raw = be.get(&format!("keys/{id}"))?;
        let file: KeyFile = serde_json::from_slice(&raw)
            .map_err(|e| Error::Corrupt(format!("key file keys/{id}: {e}")))?;
        if file.version != KEY_VERSION {
            return Err(Error::Unsupported(format!(
                "key file keys/{id} has version {}; this wayback reads {KEY_VERSION}",
                file.version
            )));
        }
        out.push(KeyInfo { id, file });
    }
    Ok(out)
}

/// Finds the key file `pass` opens; returns its id and the master key.
pub fn unlock(be: &dyn Backend, pass: &[u8]) -> Result<(String, MasterKey)> {
    let keys = list_keys(be)?;
    if keys.is_empty() {
        return Err(Error::Corrupt(
            "repository has no key files (keys/ is empty)".into(),
        ));
    }
    for k in keys {
        let salt = hex::decode(&k.file.salt)
            .map_err(|_| Error::Corrupt(format!("key file keys/{}: bad salt", k.id)))?;
        let wrapped = hex::decode(&k.file.wrapped)
            .map_err(|_| Error::Corrupt(format!("key file keys/{}: bad hex", k.id)))?;
        let wk = derive_wrapping_key(pass, &salt, k.file.kdf)?;
        if let Some(m) = unwrap_master(&wk, &wrapped) {
            return Ok((k.id, m));
        }
    }
    Err(Error::WrongPassword)
}
