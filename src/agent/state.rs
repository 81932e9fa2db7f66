//! The agent's durable state: what `wayback status` needs that snapshots do not say (the
//! schedule, the last run's duration and error, consecutive failures, WAL push failures).
//!
//! Why in the repository: status must work whether or not the agent runs, and from any user
//! who can open the repository. Why sealed: errors name paths and commands, which the rest of
//! the repository never shows in clear. The object `state/agent` is written with
//! [`Backend::put`](crate::repo::backend::Backend::put): a temporary file (0600, created
//! beneath the root without following symlinks, with the repository owner's rights), fsynced,
//! renamed over the old one, directory fsynced. A torn or tampered file fails authentication
//! and status says so instead of trusting it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Object path of the state, relative to the repository root.
pub const PATH: &str = "state/agent";
/// Associated data of the sealed state (domain separation from every other object).
const AD: &[u8] = b"wayback agent state v1";
/// Version of the JSON inside; a newer one is refused, not misread.
pub const VERSION: u32 = 1;

/// The whole state.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct AgentState {
    /// [`VERSION`].
    pub version: u32,
    /// When the agent last wrote this (RFC 3339, UTC).
    pub updated: String,
    /// Process id of the agent that wrote it.
    pub pid: u32,
    /// Per configured source.
    pub sources: Vec<SourceRecord>,
    /// WAL files the agent failed to archive since it started.
    pub wal_push_failures: u64,
    /// The last such failure (cluster and error), cleared by the next success.
    pub wal_last_error: Option<String>,
}

/// One source's record.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SourceRecord {
    /// Source name.
    pub name: String,
    /// Source type (`paths`, `command`, `basebackup`, `postgres-wal`).
    pub kind: String,
    /// `every` of the configuration, when it has one.
    pub every: Option<String>,
    /// `cron` of the configuration, when it has one.
    pub cron: Option<String>,
    /// When the agent plans to run it next (RFC 3339); passed by far means the agent stopped.
    pub next_run: Option<String>,
    /// When the last run started (RFC 3339).
    pub last_run: Option<String>,
    /// How long the last run took, seconds.
    pub last_duration_s: Option<f64>,
    /// The last run's error, cleared by the next success.
    pub last_error: Option<String>,
    /// Consecutive failed runs.
    pub failures: u64,
    /// Last snapshot written (short id and time).
    pub last_snapshot: Option<String>,
    /// Snapshot bytes added by all runs since the agent started (for the metrics counter).
    pub bytes_added: u64,
}

/// Writes the state durably (see the module doc).
pub fn save(repo: &Repository, st: &AgentState) -> Result<()> {
    let json = serde_json::to_vec(st).map_err(|e| Error::Invalid(format!("agent state: {e}")))?;
    repo.be.put(PATH, &repo.key.seal(AD, &json))
}

/// Reads the state; `Ok(None)` when no agent ever wrote one.
pub fn load(repo: &Repository) -> Result<Option<AgentState>> {
    let sealed = match repo.be.get(PATH) {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = repo.key.open(AD, &sealed, &|| PATH.to_string())?;
    let st: AgentState =
        serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("{PATH}: {e}")))?;
    if st.version != VERSION {
        return Err(Error::Invalid(format!(
            "{PATH} has version {}; this wayback reads version {VERSION}",
            st.version
        )));
    }
    Ok(Some(st))
}
