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
    /// Checksum of the other fields ([`checksum`]), hex. Optional: files written before it
    /// existed have none and are read as before; with it, a flipped byte anywhere in the
    /// fields (the sealed key too) reads as a damaged key file, not as a wrong passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// What a key file whose [`KeyFile::check`] does not match is said to be (`unlock` tells it
/// from other problems by it).
const CHECKSUM_MISMATCH: &str = "damaged: its checksum does not match its contents";

/// The checksum of a key file: `blake3("wayback-key-check-v1\0" | compact JSON of the file
/// without `check`)`, hex. Unkeyed on purpose: it detects damage (bit rot, a bad copy), not
/// tampering, which the sealed key's tag does.
pub fn checksum(file: &KeyFile) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"wayback-key-check-v1\0");
    let bare = KeyFile {
        check: None,
        ..file.clone()
    };
    h.update(&serde_json::to_vec(&bare).expect("key file serializes"));
    h.finalize().to_hex().to_string()
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
    add_key_with_kdf(be, master, pass, KdfParams::for_new_key())
}

/// [`add_key`] with explicit KDF costs (tests use cheap ones without touching the process
/// environment, which other test threads read).
pub fn add_key_with_kdf(
    be: &dyn Backend,
    master: &MasterKey,
    pass: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    let salt: [u8; 16] = rand::random();
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
        check: None,
    };
    let file = KeyFile {
        check: Some(checksum(&file)),
        ..file
    };
    let id = hex::encode(rand::random::<[u8; 8]>());
    let json = serde_json::to_vec_pretty(&file).expect("key file serializes");
    be.put(&format!("keys/{id}"), &json)?;
    Ok(id)
}

/// `wayback key passwd`: wraps `master` under `pass` in a new key file, then deletes key
/// `old_id`; returns the new id. In this order so that a crash between the two leaves both
/// passphrases working, never neither.
pub fn change_passphrase(
    be: &dyn Backend,
    old_id: &str,
    master: &MasterKey,
    pass: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    let id = add_key_with_kdf(be, master, pass, kdf)?;
    be.delete(&format!("keys/{old_id}"))?;
    Ok(id)
}

/// Largest key file read: a real one is about 400 bytes, and the file is read whole.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads and checks one key file: a regular file of sane size, JSON of this version, KDF
/// parameters within [`KdfParams::check`]'s bounds, a 16-byte salt and a wrapped key of the
/// right length. Any failure is about this file only.
pub fn read_key(be: &dyn Backend, id: &str) -> Result<KeyFile> {
    let path = format!("keys/{id}");
    let bad = |why: String| Error::Corrupt(format!("key file {path}: {why}"));
    if let Some(root) = be.local_root() {
        // A FIFO would block the read forever, a directory cannot be read at all.
        let full = root.join(&path);
        let md = std::fs::symlink_metadata(&full).map_err(|e| Error::io("stat", &full, e))?;
        if !md.is_file() {
            return Err(bad("not a regular file".into()));
        }
    }
    let size = be.size(&path)?;
    if size > MAX_KEY_FILE {
        return Err(bad(format!("{size} bytes is too large for a key file")));
    }
    let raw = be.get(&path)?;
    decode_key_file(&path, &raw)
}

/// Parses and checks the bytes of one key file (`path` names it in errors): JSON of this
/// version, KDF parameters within [`KdfParams::check`]'s bounds, a 16-byte hex salt and a
/// hex wrapped key of the right length.
///
/// Why separate from [`read_key`]: this is the part that sees bytes from disk, and the fuzz
/// target and its corpus test drive it without a repository.
pub fn decode_key_file(path: &str, raw: &[u8]) -> Result<KeyFile> {
    let bad = |why: String| Error::Corrupt(format!("key file {path}: {why}"));
    let file: KeyFile = serde_json::from_slice(raw).map_err(|e| bad(e.to_string()))?;
    if file.version != KEY_VERSION {
        return Err(Error::Unsupported(format!(
            "key file {path} has version {}; this wayback reads {KEY_VERSION}",
            file.version
        )));
    }
    file.kdf.check().map_err(|e| bad(e.to_string()))?;
    if file.salt.len() != 2 * SALT_LEN || hex::decode(&file.salt).is_err() {
        return Err(bad("salt is not 16 bytes of hex".into()));
    }
    if file.wrapped.len() != 2 * WRAPPED_LEN || hex::decode(&file.wrapped).is_err() {
        return Err(bad("wrapped key is not 92 bytes of hex".into()));
    }
    if file.check.as_ref().is_some_and(|c| *c != checksum(&file)) {
        return Err(bad(CHECKSUM_MISMATCH.into()));
    }
    Ok(file)
}

/// Salt bytes in a key file.
const SALT_LEN: usize = 16;
/// Sealed master key bytes: nonce, 64 key bytes, tag.
const WRAPPED_LEN: usize = crate::crypto::SEAL_OVERHEAD + 64;

/// All readable, well-formed key files; the others are skipped with a warning (one broken
/// file must not hide the keys that work).
pub fn list_keys(be: &dyn Backend) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    for id in be.list("keys")? {
        match read_key(be, &id) {
            Ok(file) => out.push(KeyInfo { id, file }),
            Err(e) => tracing::warn!(error = %e, "key file skipped"),
        }
    }
    Ok(out)
}

/// Finds the key file `pass` opens; returns its id and the master key.
///
/// Every key file is tried on its own: an unreadable, malformed or out-of-bounds one is
/// skipped with a warning. A wrong passphrase is [`Error::WrongPassword`] whenever at least one
/// key file could be tried and none is damaged; when none could, the error names each file's
/// problem. A key file whose checksum does not match may be the one this passphrase opened:
/// when no file opens, that is damage ([`Error::Corrupt`], exit 12) naming it, not a wrong
/// passphrase; a damaged file never hides one that opens.
pub fn unlock(be: &dyn Backend, pass: &[u8]) -> Result<(String, MasterKey)> {
    let mut problems = Vec::new();
    let mut damaged = Vec::new();
    let mut tried = 0;
    for id in be.list("keys")? {
        let attempt = read_key(be, &id).and_then(|k| {
            let hex = |s: &str| {
                hex::decode(s).map_err(|_| Error::Corrupt(format!("key file keys/{id}: bad hex")))
            };
            let (salt, wrapped) = (hex(&k.salt)?, hex(&k.wrapped)?);
            Ok((derive_wrapping_key(pass, &salt, k.kdf)?, wrapped))
        });
        let (wk, wrapped) = match attempt {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "key file skipped");
                if matches!(&e, Error::Corrupt(m) if m.ends_with(CHECKSUM_MISMATCH)) {
                    damaged.push(format!("keys/{id}"));
                }
                problems.push(e.to_string());
                continue;
            }
        };
        tried += 1;
        if let Some(m) = unwrap_master(&wk, &wrapped) {
            return Ok((id, m));
        }
    }
    if !damaged.is_empty() {
        return Err(Error::Corrupt(format!(
            "no key file opens with this passphrase, and {} damaged (checksum mismatch): if \
             the passphrase is right, its key file is the damaged one; open with another \
             key's passphrase and `wayback key add`, or put back a copy of the file",
            if damaged.len() == 1 {
                format!("key file {} is", damaged[0])
            } else {
                format!("key files {} are", damaged.join(", "))
            }
        )));
    }
    match (tried, problems.is_empty()) {
        (0, true) => Err(Error::Corrupt(
            "repository has no key files (keys/ is empty)".into(),
        )),
        (0, false) => Err(Error::Corrupt(format!(
            "no usable key file: {}",
            problems.join("; ")
        ))),
        _ => Err(Error::WrongPassword),
    }
}
