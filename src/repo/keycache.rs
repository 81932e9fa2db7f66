//! Unlocked master keys cached in the Linux kernel keyring (`wayback key unlock`).
//!
//! Why: the passphrase KDF (argon2id, 64 MiB, 3 passes) costs ~230 ms on this machine, which is
//! the whole budget of a `wayback diff` that reads 38 tree blocks. Like ssh-agent, an admin
//! unlocks once and the next commands skip the KDF. The kernel keyring rather than a file:
//! the key never touches a disk, the kernel expires it (`--timeout`), and only the same uid can
//! read it. The entry's name is derived from the repository's sealed config, so two
//! repositories never share an entry and a cached key that does not open the config is ignored.
//!
//! Payload: key id (UTF-8) | `\n` | 64-byte master key.

use std::time::Duration;

use linux_keyutils::{
    Key, KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission,
};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// Possessor: everything; same uid: view, read, search (other processes of the admin); group
/// and others: nothing.
fn permissions() -> linux_keyutils::KeyPermissions {
    KeyPermissionsBuilder::builder()
        .posessor(Permission::ALL)
        .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
        .build()
}

/// The keyring entry name of a repository, from its sealed config bytes.
pub fn entry_name(sealed_config: &[u8]) -> String {
    let h = blake3::hash(sealed_config);
    format!("wayback:{}", &h.to_hex()[..32])
}

/// The user keyring (created by the kernel on first use, like `KEY_SPEC_USER_KEYRING`).
fn user_keyring() -> std::result::Result<KeyRing, KeyError> {
    KeyRing::from_special_id(KeyRingIdentifier::User, true)
}

fn search(name: &str) -> Option<Key> {
    user_keyring().ok()?.search(name).ok()
}

/// Stores an unlocked key for `timeout` (whole seconds, at least one).
pub fn store(name: &str, key_id: &str, key: &MasterKey, timeout: Duration) -> Result<()> {
    let mut payload = Vec::with_capacity(key_id.len() + 65);
    payload.extend_from_slice(key_id.as_bytes());
    payload.push(b'\n');
    let mut raw = key.to_bytes();
    payload.extend_from_slice(&raw);
    zero(&mut raw);
    let added = user_keyring().and_then(|ring| ring.add_key(name, &payload));
    zero(&mut payload);
    let entry = added.map_err(|e| keyring_error("adding the key to", name, e))?;
    let secs = timeout.as_secs().clamp(1, u32::MAX as u64) as usize;
    if let Err(e) = entry
        .set_perms(permissions())
        .and_then(|()| entry.set_timeout(secs))
    {
        let err = keyring_error("setting permissions and timeout in", name, e);
        let _ = entry.invalidate();
        return Err(err);
    }
    Ok(())
}

/// The cached key id and master key, if present and readable.
pub fn load(name: &str) -> Option<(String, MasterKey)> {
    let entry = search(name)?;
    let mut buf = [0u8; 256];
    let parsed = match entry.read(&mut buf) {
        Ok(n) if n > 0 && n <= buf.len() => {
            let p = &buf[..n];
            p.iter().position(|&b| b == b'\n').and_then(|nl| {
                let id = std::str::from_utf8(&p[..nl]).ok()?.to_string();
                let raw: &[u8; 64] = p[nl + 1..].try_into().ok()?;
                Some((id, MasterKey::from_bytes(raw)))
            })
        }
        _ => None,
    };
    zero(&mut buf);
    parsed
}

/// Removes the entry; whether there was one.
pub fn forget(name: &str) -> bool {
    search(name).is_some_and(|k| k.invalidate().is_ok())
}

fn keyring_error(context: &'static str, name: &str, e: KeyError) -> Error {
    Error::Io {
        context,
        path: format!("the kernel user keyring (entry {name})").into(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn zero(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a volatile write to a valid &mut u8, so the wipe is not optimized away.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_uid_may_view_read_and_search_only() {
        // The bits the hand-written syscalls used: possessor 0x3f, user 0x0b.
        assert_eq!(super::permissions().bits(), 0x3f0b_0000);
    }
}
