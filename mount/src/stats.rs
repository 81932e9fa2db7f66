//! Per-operation request counters of a mount, logged when it ends.
//!
//! Why: a walk's seconds go to FUSE round trips, and which operations the kernel sends (and
//! how many the session thread answers without a worker) decides what to fix. `strace` of the
//! client shows syscalls, not requests: one `statx` may cost no request (cached attributes) or
//! two (lookup + getattr). Counting costs two relaxed atomic adds per request, so it is always
//! on; the table is logged at debug level at unmount (`RUST_LOG=debug` or `-vv`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The operations worth telling apart (the rest share `Other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Lookup,
    Getattr,
    Readlink,
    Open,
    Read,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Getxattr,
    Listxattr,
    Forget,
    Other,
}

const OPS: [Op; 13] = [
    Op::Lookup,
    Op::Getattr,
    Op::Readlink,
    Op::Open,
    Op::Read,
    Op::Opendir,
    Op::Readdir,
    Op::Readdirplus,
    Op::Releasedir,
    Op::Getxattr,
    Op::Listxattr,
    Op::Forget,
    Op::Other,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Read => "read",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Forget => "forget",
            Op::Other => "other",
        }
    }
}

/// A request being served: when it arrived and what it is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timer {
    op: Op,
    start: Instant,
}

/// Counters for every [`Op`]: requests, those answered on the session thread, and time from
/// arrival to reply (queueing on the worker pool included).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    count: [AtomicU64; OPS.len()],
    inline: [AtomicU64; OPS.len()],
    nanos: [AtomicU64; OPS.len()],
}

impl Stats {
    /// Starts timing one request.
    pub(crate) fn start(op: Op) -> Timer {
        Timer {
            op,
            start: Instant::now(),
        }
    }

    /// Records a request answered by a worker.
    pub(crate) fn done(&self, t: Timer) {
        self.add(t, false);
    }

    /// Records a request answered on the session thread.
    pub(crate) fn done_inline(&self, t: Timer) {
        self.add(t, true);
    }

    fn add(&self, t: Timer, inline: bool) {
        let i = t.op as usize;
        let ns = u64::try_from(t.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.count[i].fetch_add(1, Ordering::Relaxed);
        self.nanos[i].fetch_add(ns, Ordering::Relaxed);
        if inline {
            self.inline[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests of `op` so far (tests read it).
    #[cfg(test)]
    pub(crate) fn count(&self, op: Op) -> u64 {
        self.count[op as usize].load(Ordering::Relaxed)
    }

    /// A table of the operations seen, one line each, busiest first.
    pub(crate) fn table(&self) -> String {
        let mut rows: Vec<(Op, u64, u64, u64)> = OPS
            .iter()
            .map(|&op| {
                let i = op as usize;
                (
                    op,
                    self.count[i].load(Ordering::Relaxed),
                    self.inline[i].load(Ordering::Relaxed),
                    self.nanos[i].load(Ordering::Relaxed),
                )
            })
            .filter(|r| r.1 > 0)
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        let mut out = String::from("op           requests   inline   total ms   mean us\n");
        for (op, n, inline, ns) in rows {
            let _ = writeln!(
                out,
                "{:<12} {n:>8} {inline:>8} {:>10.1} {:>9.1}",
                op.name(),
                ns as f64 / 1e6,
                ns as f64 / 1e3 / n as f64
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_table() {
        let s = Stats::default();
        s.done(Stats::start(Op::Lookup));
        s.done_inline(Stats::start(Op::Lookup));
        s.done(Stats::start(Op::Read));
        assert_eq!(s.count(Op::Lookup), 2);
        assert_eq!(s.count(Op::Read), 1);
        assert_eq!(s.count(Op::Getxattr), 0);
        let t = s.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("lookup") && lines[1].contains(" 2 "),
            "{t}"
        );
        assert!(lines[2].starts_with("read"), "{t}");
    }
}
