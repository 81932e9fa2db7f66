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
    let _ = ENV_SECRETS.set(taken);
}

/// A secret from the environment as it was when the process started (see [`take_from_env`];
/// falls back to the live environment when that was not called, as in library tests).
pub fn get(name: &str) -> Option<String> {
    match ENV_SECRETS.get() {
        Some(t) => t.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()),
        None => std::env::var(name).ok(),
    }
}
