//! Secrets given in the environment: the passphrases and the S3 access keys.
//!
//! Why a module of its own at the bottom of the crate: the storage layer reads the S3 keys
//! and the CLI the passphrases, and both must come from the copy taken at start, never from
//! the live environment that children inherit.

/// Variables holding secrets, moved out of the environment by [`take_from_env`] and removed
/// again from every child's environment as a second guard.
pub const SECRET_ENV: [&str; 6] = [
    "WAYBACK_PASSWORD",
    "WAYBACK_NEW_PASSWORD",
    "WAYBACK_TO_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Secrets given in the environment, taken out of it when the process starts.
static ENV_SECRETS: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();

/// Moves the [`SECRET_ENV`] variables out of this process's environment into memory, before
/// any thread or child exists. Why: every program wayback starts (dump commands,
/// pg_basebackup, PostgreSQL, diff(1), fusermount3, the agent's jobs) would otherwise inherit
/// the passphrase and the S3 keys; removing them at each spawn point is easy to forget at the
/// next one. Call once, first thing in `main`.
pub fn take_from_env() {
    let mut taken = Vec::new();
    for name in SECRET_ENV {
        if let Some(v) = std::env::var_os(name) {
            if let Ok(v) = v.into_string() {
                taken.push((name, v));
            }
            // Still single-threaded here, so this cannot race a reader of the environment.
            std::env::remove_var(name);
        }
    }
    if std::env::var_os(HANDOFF_ENV).is_some() {
        std::env::remove_var(HANDOFF_ENV);
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        use std::io::Read;
        let _ = std::io::stdin()
            .lock()
            .take(MAX_HANDOFF)
            .read_to_end(&mut buf);
        for (name, v) in parse_handoff(&buf) {
            taken.retain(|(n, _)| *n != name);
            taken.push((name, v));
        }
    }
    let _ = ENV_SECRETS.set(taken);
}

/// Set (to `1`) in the environment of a child that gets this process's secrets on its stdin
/// ([`handoff`]): `mount --daemon` re-executes itself, and the secrets left the environment
/// at start, so the daemon would otherwise have no passphrase and no S3 keys. The variable
/// holds no secret itself.
pub const HANDOFF_ENV: &str = "WAYBACK_SECRETS_ON_STDIN";

/// Largest handoff read from stdin.
const MAX_HANDOFF: u64 = 64 * 1024;

/// The secrets taken at start as `NAME=value` records ended by NUL (no environment value holds
/// a NUL), for a child started with [`HANDOFF_ENV`] whose stdin is a pipe: the bytes never
/// appear in an environment or on a command line. `None` when there is nothing to hand over.
pub fn handoff() -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let t = ENV_SECRETS.get()?;
    if t.is_empty() {
        return None;
    }
    let mut out = zeroize::Zeroizing::new(Vec::new());
    for (n, v) in t {
        out.extend_from_slice(n.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    Some(out)
}

/// The records of a handoff: names outside [`SECRET_ENV`] and malformed records are ignored.
fn parse_handoff(b: &[u8]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for rec in b.split(|&c| c == 0) {
        let Some(eq) = rec.iter().position(|&c| c == b'=') else {
            continue;
        };
        let (n, v) = (&rec[..eq], &rec[eq + 1..]);
        let (Some(name), Ok(v)) = (
            SECRET_ENV.iter().find(|s| s.as_bytes() == n),
            std::str::from_utf8(v),
        ) else {
            continue;
        };
        out.push((*name, v.to_string()));
    }
    out
}

/// A secret from the environment as it was when the process started (see [`take_from_env`];
/// falls back to the live environment when that was not called, as in library tests).
pub fn get(name: &str) -> Option<String> {
    match ENV_SECRETS.get() {
        Some(t) => t.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        None => std::env::var(name).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_round_trips_and_ignores_other_names_and_junk() {
        let b = b"WAYBACK_PASSWORD=pa=ss word\0PATH=/evil\0junk\0AWS_ACCESS_KEY_ID=GK1\0\xff=\0";
        let got = parse_handoff(b);
        assert_eq!(
            got,
            vec![
                ("WAYBACK_PASSWORD", "pa=ss word".to_string()),
                ("AWS_ACCESS_KEY_ID", "GK1".to_string())
            ]
        );
        assert!(parse_handoff(b"").is_empty());
    }
}
