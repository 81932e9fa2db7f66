//! A fault-injecting [`Backend`] for tests: the crash matrix (`tests/it/fault.rs`) drives every
//! writer through it.
//!
//! Why a wrapper around the real [`LocalBackend`] and not a mock: the bytes a writer leaves
//! must be real files in a real repository, which the real code then reopens, checks and
//! restores; only the *moment* things stop is simulated.
//!
//! # The model
//! A **durability barrier** is a point where a writer learns that something is durable:
//! a [`Backend::put`], [`Backend::put_new`] or [`Backend::delete`] returning, and, outside the
//! backend, a synced write batch of the local RocksDB index (announced through
//! [`Backend::sync_point`]). The index counts because it is state that survives a crash and
//! that the next process trusts: a writer that commits a snapshot before the index entries of
//! its packs are synced would leave a reader unable to find them. Barriers are numbered from 1
//! in the order the writer reaches them (writers with several threads reach them in some order;
//! the numbering is the order they reached this backend).
//!
//! [`Fault::PowerLoss`]`{ at: k }`: barriers `1..k` happened, barrier `k` and everything after
//! did not. The process is then "dead": every later call, read or write, fails with EIO and
//! changes nothing, and so does every later index write. What a real power loss at that moment
//! can leave and this reproduces:
//! - the object of barrier `k` is absent (an object that made it is barrier `k` done, that is
//!   the crash at `k + 1`; `k` = barriers + 1 is the run that finished);
//! - a staging file in `tmp/` holding a prefix of the object's bytes (written, not yet
//!   renamed: LocalBackend stages every put in `tmp/` and fsyncs before the rename, so what a
//!   crash can leave there is such a file, never a partial object under a final name);
//! - the index exactly as of barrier `k - 1` (its batches are synced; RocksDB recovers to the
//!   last synced batch).
//!
//! What it does not reproduce: a directory entry whose directory was not fsynced vanishing, or
//! reordering inside one `put`: LocalBackend's `put` fsyncs the file, renames, and fsyncs the
//! directory, so after it returns its effect is durable and before it returns only the two
//! states above exist. A bug inside that sequence (a missing fsync) is outside this model; the
//! `kill -9` tests and the real disk-full tests cover the real file system.
//!
//! [`Fault::FailNth`]: barrier `n` fails with EIO and does nothing (no object, no index write);
//! every other operation works. The writer must report the error and must not acknowledge
//! anything that depended on it; the process lives on, so a caller that keeps the repository
//! open (the agent) must be able to run the same writer again.
//!
//! [`Fault::FailAfterNth`]: barrier `n` takes effect and *then* reports EIO, as when the
//! directory fsync after a rename fails: the object is in place (durable on this file system)
//! but the writer was told it failed. The retry must cope with what the failed attempt left.
//! An index write cannot take effect and then fail here (the hook runs before it), so at an
//! index barrier this is [`Fault::FailNth`].
//!
//! [`Fault::NoSpace`]: puts succeed until the bytes they wrote would exceed the budget; from
//! then on every put and every index write fails with ENOSPC (nothing stored), reads and
//! deletes work, until [`FaultBackend::set_fault`] frees the space.
//!
//! [`Fault::None`] counts: run a writer once and [`FaultBackend::barriers`] is its `N`.

use std::path::Path;
use std::sync::Mutex;

use super::backend::{Backend, LocalBackend};
use crate::error::{Error, Result};

/// What the backend does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing: only counts barriers.
    #[default]
    None,
    /// Barrier `at` (1-based) and everything after it never happen (see the module doc).
    PowerLoss {
        /// The barrier the power fails at.
        at: u64,
    },
    /// Barrier `nth` (1-based) fails with EIO; the others work.
    FailNth {
        /// The barrier that fails.
        nth: u64,
    },
    /// Barrier `nth` (1-based) takes effect, then reports EIO; the others work.
    FailAfterNth {
        /// The barrier that fails after the fact.
        nth: u64,
    },
    /// Puts fail with ENOSPC once they would have written more than this many bytes.
    NoSpace {
        /// Bytes of objects the "disk" still takes.
        after_bytes: u64,
    },
}

/// The kinds of durability barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// [`Backend::put`].
    Put,
    /// [`Backend::put_new`].
    PutNew,
    /// [`Backend::delete`].
    Delete,
    /// A synced write of the local index ([`Backend::sync_point`]).
    IndexSync,
}

/// One barrier reached.
#[derive(Clone, Debug)]
pub struct Reached {
    /// What kind.
    pub kind: Barrier,
    /// The object's path (or what the index wrote).
    pub path: String,
    /// Bytes a put stored (0 for the others).
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    fault: Fault,
    /// Barriers reached so far (including the one that failed).
    barriers: u64,
    /// Bytes stored by puts since the fault was set.
    written: u64,
    /// Power lost: everything fails.
    dead: bool,
    /// Barriers reached, in order.
    log: Vec<Reached>,
}

/// A [`LocalBackend`] that fails on request (see the module doc for the model).
pub struct FaultBackend {
    inner: LocalBackend,
    state: Mutex<State>,
}

/// What a barrier should do.
enum Verdict {
    Go,
    Fail(std::io::Error),
    /// The power fails at this barrier.
    Crash,
    /// Do it, then fail.
    FailAfter(std::io::Error),
}

/// The error a failing disk gives (a real errno, so callers that look at it see EIO).
fn eio() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EIO)
}

impl FaultBackend {
    /// Wraps a [`LocalBackend`] at `root` with `fault`.
    pub fn new(root: &Path, fault: Fault) -> FaultBackend {
        FaultBackend {
            inner: LocalBackend::new(root),
            state: Mutex::new(State {
                fault,
                ..State::default()
            }),
        }
    }

    /// Replaces the fault and resets the byte budget (a lost power stays lost: after a
    /// [`Fault::PowerLoss`] the test reopens the repository with a real backend, as the next
    /// process after a reboot would).
    pub fn set_fault(&self, fault: Fault) {
        let mut s = self.lock();
        s.fault = fault;
        s.written = 0;
    }

    /// Barriers reached so far.
    pub fn barriers(&self) -> u64 {
        self.lock().barriers
    }

    /// The barriers reached so far, in order (crash reports name the barrier; disk-full
    /// budgets are chosen between the puts' sizes).
    pub fn log(&self) -> Vec<Reached> {
        self.lock().log.clone()
    }

    /// True once the power was lost.
    pub fn is_dead(&self) -> bool {
        self.lock().dead
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dead_error(path: &str) -> Error {
        Error::io("after simulated power loss", path, eio())
    }

    fn check_alive(&self, path: &str) -> Result<()> {
        if self.lock().dead {
            return Err(Self::dead_error(path));
        }
        Ok(())
    }

    /// Decides barrier `kind` on `path` of `len` bytes.
    fn barrier(&self, kind: Barrier, path: &str, len: u64) -> Verdict {
        let mut s = self.lock();
        if s.dead {
            return Verdict::Fail(eio());
        }
        s.barriers += 1;
        let n = s.barriers;
        s.log.push(Reached {
            kind,
            path: path.to_string(),
            bytes: len,
        });
        match s.fault {
            Fault::None => Verdict::Go,
            Fault::PowerLoss { at } if n >= at => {
                s.dead = true;
                Verdict::Crash
            }
            Fault::PowerLoss { .. } => Verdict::Go,
            Fault::FailNth { nth } if n == nth => Verdict::Fail(eio()),
            Fault::FailNth { .. } => Verdict::Go,
            Fault::FailAfterNth { nth } if n == nth && kind == Barrier::IndexSync => {
                Verdict::Fail(eio())
            }
            Fault::FailAfterNth { nth } if n == nth => Verdict::FailAfter(eio()),
            Fault::FailAfterNth { .. } => Verdict::Go,
            Fault::NoSpace { after_bytes } => {
                let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
                match kind {
                    Barrier::Delete => Verdict::Go,
                    Barrier::IndexSync if s.written >= after_bytes => Verdict::Fail(full()),
                    Barrier::IndexSync => Verdict::Go,
                    Barrier::Put | Barrier::PutNew => {
                        if s.written.saturating_add(len) > after_bytes {
                            s.written = after_bytes;
                            Verdict::Fail(full())
                        } else {
                            s.written += len;
                            Verdict::Go
                        }
                    }
                }
            }
        }
    }

    /// What the power loss leaves of a put in flight: its staging file with a prefix of its
    /// bytes (LocalBackend's staging names, so the real cleanup sees what it would see).
    fn leave_torn_staging(&self, path: &str, data: &[u8]) {
        let base = path.rsplit('/').next().unwrap_or("obj");
        let tmp = format!(
            "tmp/{}.{:016x}.{base}",
            std::process::id(),
            rand::random::<u64>()
        );
        let fs = self.inner.beneath();
        if fs.make_dirs("tmp").is_err() {
            return;
        }
        if let Ok(mut f) = fs.create_new(&tmp) {
            use std::io::Write;
            let _ = f.write_all(&data[..data.len() / 2]);
        }
    }

    /// Decides a backend write: `Ok(None)` go, `Ok(Some(e))` go and then fail with `e`.
    fn write_barrier(
        &self,
        kind: Barrier,
        path: &str,
        data: &[u8],
    ) -> Result<Option<std::io::Error>> {
        match self.barrier(kind, path, data.len() as u64) {
            Verdict::Go => Ok(None),
            Verdict::FailAfter(e) => Ok(Some(e)),
            Verdict::Fail(e) if self.is_dead() => {
                Err(Error::io("after simulated power loss", path, e))
            }
            Verdict::Fail(e) => Err(Error::io("write (injected fault)", path, e)),
            Verdict::Crash => {
                if !data.is_empty() {
                    self.leave_torn_staging(path, data);
                }
                Err(Self::dead_error(path))
            }
        }
    }
}

/// The failure reported after an operation that took effect ([`Fault::FailAfterNth`]).
fn fail_after(path: &str, after: Option<std::io::Error>) -> Result<()> {
    match after {
        Some(e) => Err(Error::io(
            "fsync directory (injected fault, after the change)",
            path,
            e,
        )),
        None => Ok(()),
    }
}

impl Backend for FaultBackend {
    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let after = self.write_barrier(Barrier::Put, path, data)?;
        self.inner.put(path, data)?;
        fail_after(path, after)
    }

    fn put_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        let after = self.write_barrier(Barrier::PutNew, path, data)?;
        let fresh = self.inner.put_new(path, data)?;
        fail_after(path, after).map(|()| fresh)
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.check_alive(path)?;
        self.inner.get(path)
    }

    fn get_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.check_alive(path)?;
        self.inner.get_range(path, offset, len)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.check_alive(dir)?;
        self.inner.list(dir)
    }

    fn size(&self, path: &str) -> Result<u64> {
        self.check_alive(path)?;
        self.inner.size(path)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let after = self.write_barrier(Barrier::Delete, path, &[])?;
        self.inner.delete(path)?;
        fail_after(path, after)
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }

    fn sync_point(&self, what: &str) -> Result<()> {
        match self.barrier(Barrier::IndexSync, what, 0) {
            Verdict::Go => Ok(()),
            Verdict::Fail(e) if self.is_dead() => Err(Error::Index(format!(
                "{what}: after simulated power loss: {e}"
            ))),
            Verdict::Fail(e) => Err(Error::Index(format!("{what}: injected fault: {e}"))),
            Verdict::FailAfter(e) => Err(Error::Index(format!("{what}: injected fault: {e}"))),
            Verdict::Crash => Err(Error::Index(format!(
                "{what}: simulated power loss: {}",
                eio()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_stops_everything_at_the_barrier_and_leaves_only_staging() {
        let dir = tempfile::tempdir().unwrap();
        let be = FaultBackend::new(dir.path(), Fault::PowerLoss { at: 3 });
        be.put("a/one", b"1111").unwrap();
        be.sync_point("index").unwrap();
        let e = be.put("a/two", b"2222").unwrap_err();
        assert!(e.to_string().contains("power loss"), "{e}");
        assert!(be.get("a/one").is_err(), "reads fail after the power loss");
        assert!(be.sync_point("index").is_err());
        assert!(be.delete("a/one").is_err());
        assert_eq!(be.barriers(), 3, "barriers after the loss are not reached");
        let real = LocalBackend::new(dir.path());
        assert_eq!(real.get("a/one").unwrap(), b"1111");
        assert!(matches!(real.get("a/two"), Err(Error::NotFound(_))));
        let staged = real.list("tmp").unwrap();
        assert_eq!(staged.len(), 1, "{staged:?}");
        assert_eq!(real.get(&format!("tmp/{}", staged[0])).unwrap(), b"22");
    }

    #[test]
    fn fail_nth_fails_only_that_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let be = FaultBackend::new(dir.path(), Fault::FailNth { nth: 2 });
        be.put("x", b"1").unwrap();
        assert!(be.put_new("y", b"2").is_err());
        assert!(be.put_new("y", b"3").unwrap());
        assert_eq!(be.get("y").unwrap(), b"3");
        assert!(!be.is_dead());
        let kinds: Vec<Barrier> = be.log().into_iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Barrier::Put, Barrier::PutNew, Barrier::PutNew]);
    }

    #[test]
    fn fail_after_nth_applies_the_change_then_reports_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let be = FaultBackend::new(dir.path(), Fault::FailAfterNth { nth: 1 });
        let e = be.put_new("w/1", b"rec").unwrap_err();
        assert!(e.to_string().contains("after the change"), "{e}");
        assert_eq!(be.get("w/1").unwrap(), b"rec", "the change took effect");
        assert!(
            !be.put_new("w/1", b"rec").unwrap(),
            "a retry finds it there"
        );
    }

    #[test]
    fn no_space_refuses_puts_past_the_budget_until_freed() {
        let dir = tempfile::tempdir().unwrap();
        let be = FaultBackend::new(dir.path(), Fault::NoSpace { after_bytes: 10 });
        be.put("a", &[0; 6]).unwrap();
        let e = be.put("b", &[0; 6]).unwrap_err();
        match &e {
            Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("{other}"),
        }
        assert!(
            be.sync_point("index").is_err(),
            "the index shares the full disk"
        );
        be.delete("a").unwrap();
        be.set_fault(Fault::None);
        be.put("b", &[0; 6]).unwrap();
        assert_eq!(LocalBackend::new(dir.path()).get("b").unwrap().len(), 6);
    }
}
