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
    /// The agent's `wal_late` in seconds (none: off). Absent in states written before it
    /// existed, which status reads as "no WAL lateness judged".
    #[serde(default)]
    pub wal_late_s: Option<u64>,
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
    decode_state(&plain).map(Some)
}

/// Decodes the opened plaintext of [`PATH`]: a version other than [`VERSION`] is refused, not
/// misread. Separate from [`load`] so the fuzz target drives exactly this decoder.
pub fn decode_state(plain: &[u8]) -> Result<AgentState> {
    let st: AgentState =
        serde_json::from_slice(plain).map_err(|e| Error::Corrupt(format!("{PATH}: {e}")))?;
    if st.version != VERSION {
        return Err(Error::Invalid(format!(
            "{PATH} has version {}; this wayback reads version {VERSION}",
            st.version
        )));
    }
    Ok(st)
}

/// Object path of the restore-drill records (one per source, the newest drill each).
///
/// Why not inside [`PATH`]: `wayback drill` run by hand records its result too, beside a
/// running agent that rewrites `state/agent` from memory after every job and would erase it.
/// Each writer reads, replaces its source's record and writes back (atomic replace); two
/// drills finishing in the same instant can lose one record, never corrupt the object.
pub const DRILLS_PATH: &str = "state/drills";
/// Associated data of the sealed drill records.
const DRILLS_AD: &[u8] = b"wayback drill state v1";
/// Object path of the last verification (`check`) record, by the agent or by hand.
pub const CHECK_PATH: &str = "state/check";
/// Associated data of the sealed check record.
const CHECK_AD: &[u8] = b"wayback check state v1";

/// The outcome of one restore drill, as `status` and the metrics show it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DrillRecord {
    /// Source drilled.
    pub source: String,
    /// Snapshot restored (full id, hex).
    pub snapshot: String,
    /// Its time (RFC 3339).
    pub snapshot_time: String,
    /// When the drill started (RFC 3339).
    pub time: String,
    /// Whether every file restored, matched its recorded content hashes and (for a base
    /// backup with a query) PostgreSQL recovered and answered as expected.
    pub ok: bool,
    /// The measured recovery time: restore + verification (+ PostgreSQL recovery), seconds.
    pub duration_s: f64,
    /// Files verified.
    pub files: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// The first problem, when not ok.
    pub error: Option<String>,
    /// The newest successful drill of this source (RFC 3339), kept across failures.
    pub last_success: Option<String>,
}

/// The last verification run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CheckRecord {
    /// When it started (RFC 3339).
    pub time: String,
    /// No problem found.
    pub ok: bool,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// Pack data read (`--read-data`), and which part `n/m` when a subset.
    pub read_data: bool,
    /// The subset read, `n/m`; the agent's next scheduled check reads `n+1/m`.
    pub subset: Option<String>,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Problems found.
    pub problems: u64,
    /// The first problem, when not ok.
    pub error: Option<String>,
    /// The newest check without problems (RFC 3339), kept across failures.
    pub last_success: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Drills {
    version: u32,
    drills: Vec<DrillRecord>,
}

fn load_sealed<T: serde::de::DeserializeOwned>(
    repo: &Repository,
    path: &str,
    ad: &[u8],
) -> Result<Option<T>> {
    let sealed = match repo.be.get(path) {
        Ok(b) => b,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = repo.key.open(ad, &sealed, &|| path.to_string())?;
    decode_sealed_json(&plain, path).map(Some)
}

/// The JSON of an opened state object at `path` (the records of drills, copies, checks).
fn decode_sealed_json<T: serde::de::DeserializeOwned>(plain: &[u8], path: &str) -> Result<T> {
    serde_json::from_slice(plain).map_err(|e| Error::Corrupt(format!("{path}: {e}")))
}

fn save_sealed<T: Serialize>(repo: &Repository, path: &str, ad: &[u8], v: &T) -> Result<()> {
    let json = serde_json::to_vec(v).map_err(|e| Error::Invalid(format!("{path}: {e}")))?;
    repo.be.put(path, &repo.key.seal(ad, &json))
}

/// Every source's newest drill.
pub fn load_drills(repo: &Repository) -> Result<Vec<DrillRecord>> {
    Ok(load_sealed::<Drills>(repo, DRILLS_PATH, DRILLS_AD)?
        .map(|d| d.drills)
        .unwrap_or_default())
}

/// Records `rec` as its source's newest drill (keeping the previous `last_success` when this
/// one failed).
pub fn record_drill(repo: &Repository, mut rec: DrillRecord) -> Result<()> {
    let mut all = load_drills(repo).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "previous drill records unreadable; starting afresh");
        Vec::new()
    });
    let prev = all.iter().position(|d| d.source == rec.source);
    rec.last_success = if rec.ok {
        Some(rec.time.clone())
    } else {
        prev.and_then(|i| all[i].last_success.clone())
    };
    match prev {
        Some(i) => all[i] = rec,
        None => all.push(rec),
    }
    all.sort_by(|a, b| a.source.cmp(&b.source));
    save_sealed(
        repo,
        DRILLS_PATH,
        DRILLS_AD,
        &Drills {
            version: VERSION,
            drills: all,
        },
    )
}

/// Object path of the off-site copy records (one per destination, the newest run each),
/// written by `wayback copy` and the agent's scheduled copy, read by `status`. Optional like
/// the others: a repository without it never copied.
pub const COPIES_PATH: &str = "state/copies";
/// Associated data of the sealed copy records.
const COPIES_AD: &[u8] = b"wayback copy state v1";

/// The newest copy run into one destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CopyRecord {
    /// Destination as given (`--to`, `copy.to`).
    pub to: String,
    /// When the run started (RFC 3339).
    pub time: String,
    /// It finished without an error or a WAL conflict.
    pub ok: bool,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// Sources it was limited to (empty: all).
    pub sources: Vec<String>,
    /// Source snapshot ids (hex) the destination held a copy of after the newest run that
    /// got through its snapshots (kept across failures): `status` counts what is not there yet.
    pub copied: Vec<String>,
    /// The error or first WAL conflict, when not ok.
    pub error: Option<String>,
    /// The newest run without a problem (RFC 3339), kept across failures.
    pub last_success: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Copies {
    version: u32,
    copies: Vec<CopyRecord>,
}

/// Decodes the opened plaintext of [`COPIES_PATH`] (what [`load_copies`] reads; the fuzz
/// target's entry point).
pub fn decode_copies(plain: &[u8]) -> Result<Vec<CopyRecord>> {
    decode_sealed_json::<Copies>(plain, COPIES_PATH).map(|c| c.copies)
}

/// The plaintext of [`COPIES_PATH`] holding `copies` (what [`record_copy`] seals).
pub fn encode_copies(copies: Vec<CopyRecord>) -> Vec<u8> {
    serde_json::to_vec(&Copies {
        version: VERSION,
        copies,
    })
    .expect("plain data serializes")
}

/// Every destination's newest copy run.
pub fn load_copies(repo: &Repository) -> Result<Vec<CopyRecord>> {
    Ok(load_sealed::<Copies>(repo, COPIES_PATH, COPIES_AD)?
        .map(|c| c.copies)
        .unwrap_or_default())
}

/// Records `rec` as its destination's newest run. A failed run (empty `copied`) keeps what
/// the previous record knew was copied, and its `last_success`.
pub fn record_copy(repo: &Repository, mut rec: CopyRecord) -> Result<()> {
    let mut all = load_copies(repo).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "previous copy records unreadable; starting afresh");
        Vec::new()
    });
    let prev = all.iter().position(|c| c.to == rec.to);
    if let Some(i) = prev {
        if rec.copied.is_empty() {
            rec.copied = std::mem::take(&mut all[i].copied);
        }
    }
    rec.last_success = if rec.ok {
        Some(rec.time.clone())
    } else {
        prev.and_then(|i| all[i].last_success.clone())
    };
    match prev {
        Some(i) => all[i] = rec,
        None => all.push(rec),
    }
    all.sort_by(|a, b| a.to.cmp(&b.to));
    save_sealed(
        repo,
        COPIES_PATH,
        COPIES_AD,
        &Copies {
            version: VERSION,
            copies: all,
        },
    )
}

/// The last check, if any was recorded.
pub fn load_check(repo: &Repository) -> Result<Option<CheckRecord>> {
    load_sealed(repo, CHECK_PATH, CHECK_AD)
}

/// Records `rec` as the last check (keeping the previous `last_success` when it failed).
pub fn record_check(repo: &Repository, mut rec: CheckRecord) -> Result<()> {
    let prev = load_check(repo).ok().flatten();
    rec.last_success = if rec.ok {
        Some(rec.time.clone())
    } else {
        prev.and_then(|p| p.last_success)
    };
    save_sealed(repo, CHECK_PATH, CHECK_AD, &rec)
}
