//! The audit log: who restored, mounted, queried (pg-at), forgot, pruned or changed keys, and
//! when, kept in the repository and sealed like everything else (`wayback audit` lists it).
//!
//! Why one object per entry (`audit/<ms>-<random>`) rather than one file appended to: several
//! commands run at once (a restore beside the agent's prune), and an append to a sealed file is
//! a read-modify-write that loses entries; a new object per entry written with `put_new` never
//! replaces one. The name is bound into the associated data, so an entry cannot be renamed to
//! another time or duplicated under a second name unnoticed.
//!
//! What it is not: proof against someone holding the key and write access, who can delete
//! entries (or read the data without wayback at all). It is the record of what was done through
//! wayback, for people who share a repository and want to know who looked at what. Writing an
//! entry is best effort: a user who may read the repository but not write it can still
//! restore, and is warned that no entry was written.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Directory of the entries, relative to the repository root.
pub const DIR: &str = "audit";
/// Version of an entry's JSON.
pub const VERSION: u32 = 1;

/// One entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// [`VERSION`].
    pub version: u32,
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Operation: `restore`, `mount`, `pg-at`, `pitr`, `drill`, `forget`, `prune`, `key add`,
    /// `key remove`, `key passwd`.
    pub op: String,
    /// What it was applied to (snapshot, path, target, policy, key id), in words.
    pub what: String,
    /// User name of the real uid (or its number).
    pub user: String,
    /// Real uid.
    pub uid: u32,
    /// `$SUDO_USER` when run through sudo: who really asked.
    pub sudo_user: Option<String>,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
}

fn ad(name: &str) -> Vec<u8> {
    let mut a = b"wayback audit v1\0".to_vec();
    a.extend_from_slice(name.as_bytes());
    a
}

/// Appends an entry for `op` on `what`.
pub fn record(repo: &Repository, op: &str, what: &str) -> Result<()> {
    let now = crate::timespec::now_ms();
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let e = Entry {
        version: VERSION,
        time: crate::timespec::format_time(now),
        op: op.to_string(),
        what: what.to_string(),
        user,
        uid: uid.as_raw(),
        sudo_user: std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty()),
        host: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        pid: std::process::id(),
    };
    let json = serde_json::to_vec(&e).map_err(|e| Error::Invalid(format!("audit entry: {e}")))?;
    for _ in 0..8 {
        let name = format!("{:016}-{:08x}", now.max(0), rand::random::<u32>());
        let path = format!("{DIR}/{name}");
        if repo.be.put_new(&path, &repo.key.seal(&ad(&name), &json))? {
            return Ok(());
        }
    }
    Err(Error::Invalid("could not name a new audit entry".into()))
}

/// [`record`], logging instead of failing: the operation itself must not depend on it.
pub fn note(repo: &Repository, op: &str, what: &str) {
    if let Err(e) = record(repo, op, what) {
        tracing::warn!(error = %e, op, "no audit log entry written");
    }
}

/// Every entry, oldest first; an entry that fails authentication is reported as an error
/// entry (op `damaged`), not skipped, so tampering shows.
pub fn list(repo: &Repository) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let ours = |n: &str| {
        n.len() == 25
            && n.as_bytes()[16] == b'-'
            && n[..16].bytes().all(|b| b.is_ascii_digit())
            && n[17..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    for name in repo.be.list(DIR)?.into_iter().filter(|n| ours(n)) {
        let path = format!("{DIR}/{name}");
        let parsed = repo
            .be
            .get(&path)
            .and_then(|sealed| repo.key.open(&ad(&name), &sealed, &|| path.clone()))
            .and_then(|plain| {
                serde_json::from_slice::<Entry>(&plain)
                    .map_err(|e| Error::Corrupt(format!("{path}: {e}")))
            });
        out.push(parsed.unwrap_or_else(|e| Entry {
            version: VERSION,
            time: String::new(),
            op: "damaged".into(),
            what: format!("{path}: {e}"),
            user: String::new(),
            uid: 0,
            sudo_user: None,
            host: String::new(),
            pid: 0,
        }));
    }
    Ok(out)
}
