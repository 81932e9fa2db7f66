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

use std::ffi::CString;
use std::time::Duration;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};

const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
const KEYCTL_INVALIDATE: libc::c_long = 21;
/// Possessor: everything; same uid: view, read, search (other processes of the admin).
const PERM: libc::c_long = 0x3f0b_0000;

/// The keyring entry name of a repository, from its sealed config bytes.
pub fn entry_name(sealed_config: &[u8]) -> String {
    let h = blake3::hash(sealed_config);
    format!("wayback:{}", &h.to_hex()[..32])
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("keyring name {s:?}")))
}

fn search(name: &str) -> Option<libc::c_long> {
    let ty = cstr("user").ok()?;
    let desc = cstr(name).ok()?;
    // SAFETY: keyctl(KEYCTL_SEARCH) reads two NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING,
            ty.as_ptr(),
            desc.as_ptr(),
            0 as libc::c_long,
        )
    };
    (r > 0).then_some(r)
}

/// Stores an unlocked key for `timeout`.
pub fn store(name: &str, key_id: &str, key: &MasterKey, timeout: Duration) -> Result<()> {
    let mut payload = Vec::with_capacity(key_id.len() + 65);
    payload.extend_from_slice(key_id.as_bytes());
    payload.push(b'\n');
    let mut raw = key.to_bytes();
    payload.extend_from_slice(&raw);
    zero(&mut raw);
    let ty = cstr("user")?;
    let desc = cstr(name)?;
    // SAFETY: add_key reads the strings and `payload.len()` bytes of `payload`, all alive.
    let serial = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_USER_KEYRING,
        )
    };
    zero(&mut payload);
    if serial < 0 {
        return Err(keyring_error("adding the key to", name));
    }
    let secs = timeout.as_secs().clamp(1, u32::MAX as u64) as libc::c_long;
    // SAFETY: plain integer arguments.
    let ok = unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, serial, PERM) == 0
            && libc::syscall(libc::SYS_keyctl, KEYCTL_SET_TIMEOUT, serial, secs) == 0
    };
    if !ok {
        let e = keyring_error("setting permissions and timeout in", name);
        forget(name);
        return Err(e);
    }
    Ok(())
}

/// The cached key id and master key, if present and readable.
pub fn load(name: &str) -> Option<(String, MasterKey)> {
    let serial = search(name)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            serial,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let parsed = (n > 0 && (n as usize) <= buf.len())
        .then(|| {
            let p = &buf[..n as usize];
            let nl = p.iter().position(|&b| b == b'\n')?;
            let id = std::str::from_utf8(&p[..nl]).ok()?.to_string();
            let raw: &[u8; 64] = p[nl + 1..].try_into().ok()?;
            let key = MasterKey::from_bytes(raw);
            Some((id, key))
        })
        .flatten();
    zero(&mut buf);
    parsed
}

/// Removes the entry; whether there was one.
pub fn forget(name: &str) -> bool {
    match search(name) {
        // SAFETY: plain integer arguments.
        Some(s) => unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, s) == 0 },
        None => false,
    }
}

fn keyring_error(context: &'static str, name: &str) -> Error {
    Error::Io {
        context,
        path: format!("the kernel user keyring (entry {name})").into(),
        source: std::io::Error::last_os_error(),
    }
}

fn zero(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a volatile write to a valid &mut u8, so the wipe is not optimized away.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}
