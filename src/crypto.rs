//! Encryption, keyed ids and key derivation.
//!
//! Byte layout of a sealed object (never change; see docs/format.md):
//! ```text
//! nonce: 12 bytes (random) | ciphertext | tag: 16 bytes
//! ```
//! AES-256-GCM-SIV is misuse-resistant: a repeated random nonce leaks only equality of identical
//! plaintexts, never the key. The associated data binds a sealed object to its role (blob kind +
//! id, "config", "snapshot", ...) so an object moved or swapped on disk fails to open.

use aes_gcm_siv::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::id::{BlobId, BlobKind};

/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 12 + 16;

/// The repository's secret: an encryption key and a separate key for content ids.
///
/// Why two keys: ids are visible in the index and pack headers; keying them with a key that never
/// touches the cipher keeps "do these two repos hold the same file" unanswerable without the key.
///
/// Both keys are zeroed when the value is dropped, and so is the cipher's key schedule (the
/// `aes` crate's `zeroize` feature), so a freed key does not linger in a core dump or a page
/// reused by another allocation.
#[derive(Clone)]
pub struct MasterKey {
    enc: [u8; 32],
    id: [u8; 32],
    cipher: Aes256GcmSiv,
}

impl MasterKey {
    /// A fresh random key (at `init`).
    pub fn generate() -> Self {
        let mut raw = Zeroizing::new([0u8; 64]);
        rand::thread_rng().fill_bytes(&mut *raw);
        Self::from_bytes(&raw)
    }

    /// Rebuilds the key from its 64 serialized bytes (enc key | id key).
    pub fn from_bytes(raw: &[u8; 64]) -> Self {
        let mut enc = [0u8; 32];
        let mut id = [0u8; 32];
        enc.copy_from_slice(&raw[..32]);
        id.copy_from_slice(&raw[32..]);
        let cipher = Aes256GcmSiv::new((&enc).into());
        MasterKey { enc, id, cipher }
    }

    /// The 64 bytes to wrap in a key file.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&self.enc);
        raw[32..].copy_from_slice(&self.id);
        raw
    }

    /// Content id of a blob: blake3 keyed with the id key.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id, data).as_bytes())
    }

    /// Keyed hash for other objects (snapshot ids), domain-separated from blob ids.
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.id);
        h.update(domain.as_bytes());
        h.update(&[0]);
        h.update(data);
        *h.finalize().as_bytes()
    }

    /// Encrypts `plain` bound to `ad`.
    pub fn seal(&self, ad: &[u8], plain: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, ad, plain)
    }

    /// Seals in place: `buf` holds 12 bytes of room for the nonce followed by the plaintext and
    /// becomes the sealed object (same layout as [`MasterKey::seal`]).
    ///
    /// Why: the hot paths (backup workers, wal-push) compress straight into a buffer that
    /// already has room for the nonce, so the ciphertext needs no second buffer and no copy.
    pub fn seal_in_place(&self, ad: &[u8], buf: &mut Vec<u8>) {
        seal_in_place_with(&self.cipher, ad, buf)
    }

    /// Decrypts and authenticates; any tampering is `Corrupt` naming `what`.
    pub fn open(&self, ad: &[u8], sealed: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        open_with(&self.cipher, ad, sealed).ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: authentication failed (damaged or tampered)",
                what()
            ))
        })
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.id.zeroize();
    }
}

/// Associated data for a blob: kind byte followed by the id.
pub fn blob_ad(kind: BlobKind, id: &BlobId) -> [u8; 33] {
    let mut ad = [0u8; 33];
    ad[0] = kind.to_byte();
    ad[1..].copy_from_slice(&id.0);
    ad
}

fn seal_with(cipher: &Aes256GcmSiv, ad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
    buf.extend_from_slice(&[0u8; 12]);
    buf.extend_from_slice(plain);
    seal_in_place_with(cipher, ad, &mut buf);
    buf
}

fn seal_in_place_with(cipher: &Aes256GcmSiv, ad: &[u8], buf: &mut Vec<u8>) {
    assert!(buf.len() >= 12, "seal_in_place needs room for the nonce");
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    buf[..12].copy_from_slice(&nonce);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), ad, &mut buf[12..])
        .expect("AES-GCM-SIV encryption cannot fail for in-memory buffers");
    buf.extend_from_slice(&tag);
}

fn open_with(cipher: &Aes256GcmSiv, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: ad })
        .ok()
}

/// Argon2id cost parameters, stored in each key file so they can be raised later.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// Interactive-strength default: 64 MiB, 3 passes (~0.2 s on this class of machine).
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Cheap parameters for test suites only (`WAYBACK_INSECURE_FAST_KDF=1` at init/key add).
    pub const INSECURE_FAST: KdfParams = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };

    /// Largest memory cost accepted from a key file (KiB): 4 GiB. argon2 allocates it up front,
    /// so an edited key file could otherwise abort the process.
    pub const MAX_M_COST: u32 = 4 << 20;
    /// Largest number of passes accepted: a huge value would hang every open.
    pub const MAX_T_COST: u32 = 64;
    /// Largest number of lanes accepted.
    pub const MAX_P_COST: u32 = 64;

    /// Refuses parameters outside the bounds above (and below argon2's minimums), before
    /// anything is allocated.
    pub fn check(&self) -> Result<()> {
        let KdfParams {
            m_cost,
            t_cost,
            p_cost,
        } = *self;
        if !(1..=Self::MAX_P_COST).contains(&p_cost)
            || !(1..=Self::MAX_T_COST).contains(&t_cost)
            || !(8 * p_cost..=Self::MAX_M_COST).contains(&m_cost)
        {
            return Err(Error::Invalid(format!(
                "KDF parameters m_cost={m_cost} KiB, t_cost={t_cost}, p_cost={p_cost} are out of range \
                 (memory 8*p_cost..={} KiB, 1..={} passes, 1..={} lanes)",
                Self::MAX_M_COST,
                Self::MAX_T_COST,
                Self::MAX_P_COST
            )));
        }
        Ok(())
    }

    /// The parameters new key files get: the default unless the test-only override is set.
    pub fn for_new_key() -> KdfParams {
        if std::env::var_os("WAYBACK_INSECURE_FAST_KDF").is_some_and(|v| v == "1") {
            KdfParams::INSECURE_FAST
        } else {
            KdfParams::DEFAULT
        }
    }
}

/// Derives a wrapping key from a passphrase with argon2id (zeroed when dropped); parameters
/// outside [`KdfParams::check`]'s bounds are refused before argon2 allocates anything.
pub fn derive_wrapping_key(pass: &[u8], salt: &[u8], p: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    p.check()?;
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::Invalid(format!("bad KDF parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass, salt, &mut *out)
        .map_err(|e| Error::Invalid(format!("KDF failed: {e}")))?;
    Ok(out)
}

/// Wraps the master key under a passphrase-derived key.
pub fn wrap_master(wrapping: &[u8; 32], master: &MasterKey) -> Vec<u8> {
    let c = Aes256GcmSiv::new(wrapping.into());
    seal_with(&c, b"wayback-key-v1", &*Zeroizing::new(master.to_bytes()))
}

/// Unwraps; `None` means the passphrase is wrong (or the key file damaged).
pub fn unwrap_master(wrapping: &[u8; 32], wrapped: &[u8]) -> Option<MasterKey> {
    let c = Aes256GcmSiv::new(wrapping.into());
    let raw = Zeroizing::new(open_with(&c, b"wayback-key-v1", wrapped)?);
    let raw: &[u8; 64] = raw.as_slice().try_into().ok()?;
    Some(MasterKey::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_ad_binding() {
        let k = MasterKey::generate();
        let s = k.seal(b"a", b"hello");
        assert_eq!(k.open(b"a", &s, &|| "x".into()).unwrap(), b"hello");
        assert!(k.open(b"b", &s, &|| "x".into()).unwrap_err().is_corrupt());
        let mut bad = s.clone();
        bad[14] ^= 1;
        assert!(k.open(b"a", &bad, &|| "x".into()).is_err());
        assert!(k.open(b"a", &s[..10], &|| "x".into()).is_err());
    }

    #[test]
    fn master_key_bytes_are_zeroed_on_drop() {
        let mut k = std::mem::ManuallyDrop::new(MasterKey::generate());
        assert!(k.enc != [0; 32] && k.id != [0; 32]);
        let p: *mut MasterKey = &mut *k;
        // SAFETY: `k` is never used as a MasterKey again; its storage stays alive (ManuallyDrop)
        // and the two plain byte arrays are read after their Drop ran.
        let (enc, id) = unsafe {
            std::ptr::drop_in_place(p);
            (std::ptr::read(&(*p).enc), std::ptr::read(&(*p).id))
        };
        assert_eq!((enc, id), ([0; 32], [0; 32]));
    }

    #[test]
    fn kdf_parameters_are_bounded_before_use() {
        assert!(KdfParams::DEFAULT.check().is_ok());
        assert!(KdfParams::INSECURE_FAST.check().is_ok());
        for (m_cost, t_cost, p_cost) in [
            (u32::MAX, 1, 1),
            (256, u32::MAX, 1),
            (256, 1, u32::MAX),
            (256, 0, 1),
            (0, 1, 1),
            (KdfParams::MAX_M_COST + 1, 1, 1),
        ] {
            let p = KdfParams {
                m_cost,
                t_cost,
                p_cost,
            };
            // Would abort (allocation) or hang (passes) if it reached argon2.
            assert!(derive_wrapping_key(b"pw", b"saltsaltsalt1234", p).is_err());
        }
    }

    #[test]
    fn wrap_unwrap() {
        let k = MasterKey::generate();
        let w = derive_wrapping_key(b"pw", b"saltsaltsalt1234", KdfParams::INSECURE_FAST).unwrap();
        let wrapped = wrap_master(&w, &k);
        assert_eq!(
            unwrap_master(&w, &wrapped).unwrap().to_bytes(),
            k.to_bytes()
        );
        let w2 = derive_wrapping_key(b"pX", b"saltsaltsalt1234", KdfParams::INSECURE_FAST).unwrap();
        assert!(unwrap_master(&w2, &wrapped).is_none());
    }
}
