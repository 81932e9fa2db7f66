//! Leases: lock objects in the repository, so writers on several hosts share one S3 repository
//! and prune, repair (which rewrite shared state) run only when no other writer is alive.
//!
//! Why objects and not the `flock` local repositories use: an `flock` in a host's cache
//! directory says nothing to another host. Why leases that expire rather than locks that are
//! removed: a host that dies (or a `kill -9`'d writer) never removes its object; a lease not
//! refreshed for its lease time plus a margin is stale and ignored.
//!
//! Protocol (restic's): write our own object `locks/<kind>-<host>-<pid>-<random>`, then list
//! `locks/`. An exclusive taker gives up (deleting its object) if any other fresh lease exists;
//! a shared taker if a fresh exclusive one exists. Two takers that both write and then both
//! list may both give up; neither proceeds beside the other. A background thread rewrites the
//! object every lease/3; a writer whose lease was not refreshed within the lease time (or whose
//! object vanished) has lost it and must not publish a snapshot: a prune may have started.
//!
//! Clock skew: freshness compares a lease's `refreshed` time (the taker's clock) with the
//! reader's clock, so a taker compares its clock with the store's (the `Last-Modified` of the
//! object it just wrote) and refuses when they differ by more than the margin. A lease dated
//! further ahead than the margin (its holder's clock jumped after that check) is judged by the
//! store's `Last-Modified` of its object instead, so it cannot hold off prune for ever.
//!
//! Knobs (environment): `WAYBACK_LEASE_SECS` (default 300), `WAYBACK_LEASE_MARGIN_SECS`
//! (default 60; also the largest clock skew accepted). `WAYBACK_TEST_CLOCK_OFFSET_SECS` shifts
//! this process's clock for the lease code only: it exists for the skew tests, nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// Directory of lock objects.
pub const LOCKS_DIR: &str = "locks";
/// Associated data sealing a lock object's body.
pub const LOCK_AD: &[u8] = b"wayback-lock";
/// Version written in a lock object's body.
pub const LOCK_VERSION: u32 = 1;
/// Largest lock object body decoded (a real one is ~200 bytes).
pub const MAX_LOCK_BODY: usize = 4096;

/// What a lease allows beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// Writers that only add (backup, agent, copy into, forget): any number at once.
    Shared,
    /// Prune, repair: alone.
    Exclusive,
}

impl LeaseKind {
    /// `shared` or `exclusive` (the object name's first part).
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Shared => "shared",
            LeaseKind::Exclusive => "exclusive",
        }
    }

    /// The kind an operation (a subcommand name, see `lock::operation`) needs. Why prune and
    /// repair: they delete or rewrite packs and manifests other writers rely on; everything
    /// else that writes only adds content-addressed packs and its own manifests (forget deletes
    /// manifests, which no writer depends on).
    pub fn for_operation(op: &str) -> LeaseKind {
        match op {
            "prune" | "repair" => LeaseKind::Exclusive,
            _ => LeaseKind::Shared,
        }
    }
}

/// The decoded body of a lock object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    /// [`LOCK_VERSION`].
    pub version: u32,
    /// Shared or exclusive.
    pub kind: LeaseKind,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What the holder does (subcommand name).
    pub operation: String,
    /// When the lease was taken, Unix seconds (holder's clock).
    pub created: i64,
    /// When it was last refreshed, Unix seconds (holder's clock).
    pub refreshed: i64,
    /// The holder's lease time, seconds: it is stale `lease_secs` + margin after `refreshed`.
    pub lease_secs: u64,
}

impl LockBody {
    /// Parses a decrypted body. Never panics: junk (from a damaged or hostile store) is
    /// `Corrupt`, and the caller treats such an object as stale.
    pub fn decode(plain: &[u8]) -> Result<LockBody> {
        if plain.len() > MAX_LOCK_BODY {
            return Err(Error::Corrupt(format!(
                "lock object body of {} bytes",
                plain.len()
            )));
        }
        let b: LockBody = serde_json::from_slice(plain)
            .map_err(|e| Error::Corrupt(format!("lock object: {e}")))?;
        if b.version != LOCK_VERSION {
            return Err(Error::Unsupported(format!(
                "lock object version {}; this wayback writes version {LOCK_VERSION}",
                b.version
            )));
        }
        if b.host.len() > 255 || b.operation.len() > 64 {
            return Err(Error::Corrupt("lock object: overlong field".into()));
        }
        if b.lease_secs == 0 || b.lease_secs > 7 * 86400 {
            return Err(Error::Corrupt(format!(
                "lock object: lease of {} s",
                b.lease_secs
            )));
        }
        Ok(b)
    }

    /// The JSON this body is stored as (before sealing).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("lock body serializes")
    }

    /// True while the lease counts: refreshed no longer than its lease plus `margin` ago.
    pub fn fresh_at(&self, now: i64, margin: u64) -> bool {
        now.saturating_sub(self.refreshed) <= self.limit(margin)
    }

    /// Seconds after its last refresh this lease still counts: lease time plus `margin`.
    fn limit(&self, margin: u64) -> i64 {
        self.lease_secs.saturating_add(margin).min(i64::MAX as u64) as i64
    }

    /// "host H pid P (operation), shared lease since T": names the holder in refusals,
    /// without control characters (the store's content is not trusted).
    pub fn describe(&self) -> String {
        let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
        format!(
            "{} pid {} ({}), {} lease since {}, refreshed {}",
            clean(&self.host),
            self.pid,
            clean(&self.operation),
            self.kind.as_str(),
            rfc3339(self.created),
            rfc3339(self.refreshed)
        )
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Lease time and margin, from the environment (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct LeaseConfig {
    /// How long a lease lasts without a refresh.
    pub lease_secs: u64,
    /// Extra time before another host treats it as stale; also the largest clock skew allowed.
    pub margin_secs: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl LeaseConfig {
    /// `WAYBACK_LEASE_SECS` (default 300, at least 1) and `WAYBACK_LEASE_MARGIN_SECS`
    /// (default 60).
    pub fn from_env() -> LeaseConfig {
        LeaseConfig {
            lease_secs: env_u64("WAYBACK_LEASE_SECS").unwrap_or(300).clamp(1, 86400),
            margin_secs: env_u64("WAYBACK_LEASE_MARGIN_SECS")
                .unwrap_or(60)
                .min(86400),
        }
    }
}

/// This process's clock for leases, Unix seconds: the system clock, shifted by
/// `WAYBACK_TEST_CLOCK_OFFSET_SECS` (tests only, to simulate a skewed host).
pub fn now() -> i64 {
    let off = std::env::var("WAYBACK_TEST_CLOCK_OFFSET_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    chrono::Utc::now().timestamp().saturating_add(off)
}

static WAIT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// How long a writer opening the repository retries a lease another host is in the way of
/// (`--wait SECS`; default: not at all, exit 11 at once).
pub fn set_wait(d: Duration) {
    let _ = WAIT.set(d);
}

/// One lock object as `wayback locks` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LockInfo {
    /// Object name under `locks/`.
    pub name: String,
    /// Its body, when it could be read and decoded.
    pub body: Option<LockBody>,
    /// Why it could not be (then it counts as stale).
    pub error: Option<String>,
    /// Whether it still counts.
    pub fresh: bool,
}

/// True for names lease objects have (`locks/writer`, the local flock file, is not one).
fn is_lease_name(n: &str) -> bool {
    n.starts_with("shared-") || n.starts_with("exclusive-")
}

/// Reads every lock object under `locks/` (fresh or not, per `cfg`'s margin and this clock).
pub fn list(be: &dyn Backend, key: &MasterKey, cfg: &LeaseConfig) -> Result<Vec<LockInfo>> {
    let now = now();
    let mut out = Vec::new();
    for name in be.list(LOCKS_DIR)? {
        if !is_lease_name(&name) {
            continue;
        }
        let path = format!("{LOCKS_DIR}/{name}");
        let body = match be.get(&path) {
            Ok(sealed) => key
                .open(LOCK_AD, &sealed, &|| format!("lock object {name}"))
                .and_then(|p| LockBody::decode(&p)),
            // Removed between the list and the read: gone, not ours to report.
            Err(Error::NotFound(_)) => continue,
            Err(e) => Err(e),
        };
        out.push(match body {
            Ok(b) => LockInfo {
                fresh: judge(be, &path, &b, now, cfg.margin_secs),
                name,
                body: Some(b),
                error: None,
            },
            Err(e) => LockInfo {
                name,
                body: None,
                error: Some(e.to_string()),
                fresh: false,
            },
        });
    }
    Ok(out)
}

/// Whether lease `b` (object `path`) still counts at `now`. A lease refreshed later than `now`
/// plus the margin was written by a clock that is (or was, before a jump) ahead of ours: by its
/// own times it would stay fresh until that clock's future and hold off every prune long after
/// its holder died. Such a lease is judged by the store's clock instead, the `Last-Modified`
/// of its object (rewritten on every refresh); when the store gives none it still counts (a
/// live writer must never look stale).
fn judge(be: &dyn Backend, path: &str, b: &LockBody, now: i64, margin: u64) -> bool {
    if b.refreshed <= now.saturating_add(margin.min(i64::MAX as u64) as i64) {
        return b.fresh_at(now, margin);
    }
    match be.modified(path) {
        Ok(Some(m)) => now.saturating_sub(m) <= b.limit(margin),
        _ => true,
    }
}

/// Removes lock objects: all of them, or (`stale_only`) those that no longer count. Returns
/// the removed ones.
pub fn remove(
    be: &dyn Backend,
    key: &MasterKey,
    cfg: &LeaseConfig,
    stale_only: bool,
) -> Result<Vec<LockInfo>> {
    let gone: Vec<LockInfo> = list(be, key, cfg)?
        .into_iter()
        .filter(|l| !stale_only || !l.fresh)
        .collect();
    let paths: Vec<String> = gone
        .iter()
        .map(|l| format!("{LOCKS_DIR}/{}", l.name))
        .collect();
    be.delete_many(&paths)?;
    Ok(gone)
}

struct Inner {
    be: Arc<dyn Backend>,
    key: MasterKey,
    path: String,
    body: Mutex<LockBody>,
    lost: AtomicBool,
    last_ok: Mutex<Instant>,
    lease: Duration,
}

impl Inner {
    fn write(&self, body: &LockBody) -> Result<()> {
        self.be
            .put(&self.path, &self.key.seal(LOCK_AD, &body.encode()))
    }

    /// One refresh: the object must still be there (else an exclusive taker removed it as
    /// stale, and may be pruning), and was refreshed in time (else it may have looked stale).
    fn refresh(&self) {
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        if self.last_ok.lock().expect("poisoned").elapsed() >= self.lease {
            self.lose("not refreshed within the lease time");
            return;
        }
        match self.be.size(&self.path) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => {
                self.lose("the lock object was removed");
                return;
            }
            Err(e) => {
                tracing::warn!(lock = %self.path, error = %e, "could not refresh the lease; retrying");
                return;
            }
        }
        let mut b = self.body.lock().expect("poisoned").clone();
        b.refreshed = now();
        match self.write(&b) {
            Ok(()) => {
                *self.body.lock().expect("poisoned") = b;
                *self.last_ok.lock().expect("poisoned") = started;
            }
            Err(e) => {
                tracing::warn!(lock = %self.path, error = %e, "could not refresh the lease; retrying")
            }
        }
    }

    fn lose(&self, why: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(lock = %self.path, why, "lease lost: this process publishes no snapshot until it takes a new one");
        }
    }
}

/// A held lease; its object is refreshed in the background and removed on drop.
pub struct Lease {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// `s` with only characters safe in an object name, at most `n` of them.
fn name_part(s: &str, n: usize) -> String {
    let p: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
        .take(n)
        .collect();
    if p.is_empty() {
        "unknown".into()
    } else {
        p
    }
}

impl Lease {
    /// [`Lease::acquire`], retried while it is `Locked` for up to the time set by
    /// [`set_wait`], 0.5 to 2 s apart at random (two hosts that both backed off must not retry
    /// in lockstep).
    pub fn acquire_waiting(
        be: Arc<dyn Backend>,
        key: &MasterKey,
        kind: LeaseKind,
        operation: &str,
    ) -> Result<Lease> {
        let deadline = Instant::now() + WAIT.get().copied().unwrap_or_default();
        loop {
            match Lease::acquire(be.clone(), key, kind, operation, None) {
                Err(Error::Locked(holder)) if Instant::now() < deadline => {
                    let pause = Duration::from_millis(500 + rand::random::<u64>() % 1500);
                    tracing::info!(%holder, "lease in the way; waiting");
                    std::thread::sleep(pause.min(deadline - Instant::now()));
                }
                r => return r,
            }
        }
    }

    /// Takes a lease of `kind` for `operation` or says who is in the way (`Locked`, exit 11).
    /// `ignore`: the object name of a lease this process already holds (the agent's shared
    /// lease when it takes an exclusive one for its own prune). Stale leases an exclusive
    /// taker finds are removed and logged.
    pub fn acquire(
        be: Arc<dyn Backend>,
        key: &MasterKey,
        kind: LeaseKind,
        operation: &str,
        ignore: Option<&str>,
    ) -> Result<Lease> {
        let cfg = LeaseConfig::from_env();
        let host = host_name();
        let name = format!(
            "{}-{}-{}-{:016x}",
            kind.as_str(),
            name_part(&host, 64),
            std::process::id(),
            rand::random::<u64>()
        );
        let t = now();
        let body = LockBody {
            version: LOCK_VERSION,
            kind,
            host: host.chars().take(255).collect(),
            pid: std::process::id(),
            operation: operation.chars().take(64).collect(),
            created: t,
            refreshed: t,
            lease_secs: cfg.lease_secs,
        };
        let inner = Arc::new(Inner {
            be: be.clone(),
            key: key.clone(),
            path: format!("{LOCKS_DIR}/{name}"),
            body: Mutex::new(body.clone()),
            lost: AtomicBool::new(false),
            last_ok: Mutex::new(Instant::now()),
            lease: Duration::from_secs(cfg.lease_secs),
        });
        inner.write(&body)?;
        let give_up = |e: Error| {
            if let Err(d) = be.delete(&inner.path) {
                tracing::warn!(lock = %inner.path, error = %d, "could not remove our lock object");
            }
            Err(e)
        };
        let after = now();
        if let Err(e) = check_skew(be.as_ref(), &inner.path, t, after, cfg.margin_secs) {
            return give_up(e);
        }
        let others = match list(be.as_ref(), key, &cfg) {
            Ok(l) => l,
            Err(e) => return give_up(e),
        };
        let mut stale = Vec::new();
        for l in others {
            if l.name == name || ignore == Some(l.name.as_str()) {
                continue;
            }
            match (&l.body, l.fresh) {
                (Some(b), true)
                    if kind == LeaseKind::Exclusive || b.kind == LeaseKind::Exclusive =>
                {
                    return give_up(Error::Locked(format!(
                        "{} (lock object locks/{}; `wayback unlock --stale-only` removes it once \
                         it is stale)",
                        b.describe(),
                        l.name
                    )));
                }
                (_, true) => {}
                (_, false) => stale.push(l),
            }
        }
        if kind == LeaseKind::Exclusive {
            for l in &stale {
                let what = l
                    .body
                    .as_ref()
                    .map_or_else(|| l.error.clone().unwrap_or_default(), LockBody::describe);
                tracing::info!(lock = %l.name, holder = %what, "removing a stale lease");
            }
            let paths: Vec<String> = stale
                .iter()
                .map(|l| format!("{LOCKS_DIR}/{}", l.name))
                .collect();
            if let Err(e) = be.delete_many(&paths) {
                tracing::warn!(error = %e, "could not remove stale leases");
            }
        }
        let (tx, rx) = mpsc::channel::<()>();
        let every = Duration::from_millis((cfg.lease_secs * 1000 / 3).max(200));
        let i2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name("wayback-lease".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    i2.refresh();
                }
            })
            .map_err(|e| Error::io("start the lease thread", "lease", e))?;
        tracing::debug!(lock = %inner.path, "lease taken");
        Ok(Lease {
            inner,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Object name under `locks/`.
    pub fn name(&self) -> &str {
        self.inner
            .path
            .strip_prefix("locks/")
            .unwrap_or(&self.inner.path)
    }

    /// `Ok` while the lease holds; `Locked` once it was lost (not refreshed in time, or its
    /// object removed). Called before publishing a snapshot and before prune deletes.
    pub fn check(&self) -> Result<()> {
        self.inner.check()
    }

    /// A handle that checks this lease without keeping it (see [`LeaseWatch`]).
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch(Arc::downgrade(&self.inner))
    }
}

/// Checks a lease held elsewhere (the agent's exclusive lease, from inside prune) while it
/// lives; a dropped lease checks as `Ok` (nothing is held any more to lose).
#[derive(Clone)]
pub struct LeaseWatch(std::sync::Weak<Inner>);

impl LeaseWatch {
    /// [`Lease::check`] of the watched lease, `None` once it was dropped.
    pub fn check(&self) -> Option<Result<()>> {
        self.0.upgrade().map(|i| i.check())
    }
}

impl Inner {
    fn check(&self) -> Result<()> {
        let late = self.last_ok.lock().expect("poisoned").elapsed() >= self.lease;
        if late {
            self.lose("not refreshed within the lease time");
        }
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Locked(format!(
                "this process's lease ({}) was lost (not refreshed in time, or removed as \
                 stale): another host may be pruning, so nothing is published; run again",
                self.path
            )));
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Err(e) = self.inner.be.delete(&self.inner.path) {
            tracing::warn!(lock = %self.inner.path, error = %e, "could not remove our lock object; it goes stale");
        }
    }
}

/// Refuses when this clock and the store's differ by more than `margin` seconds: `before` and
/// `after` bracket the PUT of `path`, whose `Last-Modified` is the store's time of it.
fn check_skew(be: &dyn Backend, path: &str, before: i64, after: i64, margin: u64) -> Result<()> {
    let Some(store) = be.modified(path)? else {
        return Ok(());
    };
    // Last-Modified has whole seconds: one second of slack each way.
    let skew = if store < before - 1 {
        before - 1 - store
    } else if store > after + 1 {
        store - after - 1
    } else {
        0
    };
    if skew.unsigned_abs() > margin {
        let dir = if store < before { "ahead of" } else { "behind" };
        return Err(Error::Invalid(format!(
            "clock skew: this host's clock is {} s {dir} the repository store's (Last-Modified \
             of {path}), more than the {margin} s leases allow; fix the clock (NTP) and run again",
            skew.unsigned_abs()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body() -> LockBody {
        LockBody {
            version: LOCK_VERSION,
            kind: LeaseKind::Shared,
            host: "h1".into(),
            pid: 42,
            operation: "backup".into(),
            created: 1000,
            refreshed: 1100,
            lease_secs: 300,
        }
    }

    #[test]
    fn a_body_round_trips_and_goes_stale_after_lease_plus_margin() {
        let b = body();
        assert_eq!(LockBody::decode(&b.encode()).unwrap(), b);
        assert!(b.fresh_at(1100 + 360, 60));
        assert!(!b.fresh_at(1100 + 361, 60));
        assert!(b.describe().contains("h1 pid 42 (backup), shared lease"));
    }

    #[test]
    fn junk_bodies_are_refused_not_trusted() {
        for junk in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"version":2,"kind":"shared","host":"h","pid":1,"operation":"x","created":0,"refreshed":0,"lease_secs":1}"#,
            br#"{"version":1,"kind":"both","host":"h","pid":1,"operation":"x","created":0,"refreshed":0,"lease_secs":1}"#,
            br#"{"version":1,"kind":"shared","host":"h","pid":1,"operation":"x","created":0,"refreshed":0,"lease_secs":0}"#,
        ] {
            assert!(LockBody::decode(junk).is_err(), "{}", String::from_utf8_lossy(junk));
        }
        let mut b = body();
        b.operation = "x".repeat(65);
        assert!(LockBody::decode(&b.encode()).is_err());
        // Extreme times never overflow the freshness test.
        b = body();
        b.refreshed = i64::MIN;
        b.lease_secs = 7 * 86400;
        assert!(!b.fresh_at(i64::MAX, 0));
        let _ = b.fresh_at(i64::MAX, u64::MAX);
        b.refreshed = i64::MAX;
        assert!(b.fresh_at(i64::MIN, 0));
    }

    #[test]
    fn a_future_dated_lease_is_judged_by_the_stores_clock() {
        let dir = tempfile::tempdir().unwrap();
        let be = super::super::backend::LocalBackend::new(dir.path());
        let key = MasterKey::generate();
        let cfg = LeaseConfig {
            lease_secs: 300,
            margin_secs: 60,
        };
        let mut b = body();
        // Refreshed a day ahead of this clock (its writer's clock ran ahead).
        b.refreshed = now() + 86_400;
        let path = format!("{LOCKS_DIR}/shared-h1-42-abc");
        be.put(&path, &key.seal(LOCK_AD, &b.encode())).unwrap();
        let l = list(&be, &key, &cfg).unwrap();
        assert!(l[0].fresh, "just written: its holder may be alive");
        // Not rewritten for an hour by the store's clock: its holder is gone.
        let old = filetime::FileTime::from_unix_time(now() - 3600, 0);
        filetime::set_file_mtime(dir.path().join(&path), old).unwrap();
        let l = list(&be, &key, &cfg).unwrap();
        assert!(
            !l[0].fresh,
            "a future-dated lease must not hold off prune forever"
        );
        assert_eq!(remove(&be, &key, &cfg, true).unwrap().len(), 1);
        // A lease dated within the margin ahead is judged by its own time as before.
        b.refreshed = now() + 30;
        be.put(&path, &key.seal(LOCK_AD, &b.encode())).unwrap();
        filetime::set_file_mtime(dir.path().join(&path), old).unwrap();
        assert!(list(&be, &key, &cfg).unwrap()[0].fresh);
    }

    #[test]
    fn prune_and_repair_are_exclusive_everything_else_shared() {
        assert_eq!(LeaseKind::for_operation("prune"), LeaseKind::Exclusive);
        assert_eq!(LeaseKind::for_operation("repair"), LeaseKind::Exclusive);
        for op in ["backup", "agent", "copy", "forget", "index", "basebackup"] {
            assert_eq!(LeaseKind::for_operation(op), LeaseKind::Shared, "{op}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = LockBody::decode(&data);
        }

        #[test]
        fn decoding_mutated_bodies_never_panics(pos in 0usize..400, byte in any::<u8>(), now in any::<i64>(), margin in any::<u64>()) {
            let mut raw = body().encode();
            let p = pos % raw.len();
            raw[p] = byte;
            if let Ok(b) = LockBody::decode(&raw) {
                let _ = b.fresh_at(now, margin);
                let _ = b.describe();
            }
        }
    }
}
