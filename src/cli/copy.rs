//! `wayback copy --to REPO2`: snapshots (and with `--wal` the WAL archive) into a second
//! repository, sending only what it lacks, re-encrypted under its key.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::cli::common::{human_bytes, passphrase, progress_bar, RepoArgs};
use crate::copy::{self, SnapshotsCopied, WalCopied};
use crate::error::Error;
use crate::ingest::Counters;
use crate::repo::{Access, Repository};
use crate::wal::WalError;

/// Arguments of `copy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Destination repository (made with `wayback init`; its own passphrase).
    #[arg(long, value_name = "REPO2")]
    pub to: PathBuf,
    /// File whose first line is the destination's passphrase (else $WAYBACK_TO_PASSWORD,
    /// else a prompt).
    #[arg(long, env = "WAYBACK_TO_PASSWORD_FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Only snapshots of this source (repeatable; default every source).
    #[arg(long = "source", value_name = "S")]
    pub sources: Vec<String>,
    /// Also copy the WAL archive: every file the destination lacks.
    #[arg(long)]
    pub wal: bool,
    /// With --wal: only this cluster's archive (repeatable; default every cluster).
    #[arg(long = "cluster", requires = "wal")]
    pub clusters: Vec<String>,
    /// JSON summary: snapshots copied/skipped, blobs and bytes sent, WAL files copied.
    #[arg(long)]
    pub json: bool,
}

/// What one run did (the `--json` summary and the agent's log line).
#[derive(serde::Serialize, Debug, Default)]
pub struct Summary {
    /// Snapshots copied.
    pub snapshots_copied: usize,
    /// Snapshots that already had a copy.
    pub snapshots_skipped: usize,
    /// Blobs stored in the destination.
    pub blobs_sent: u64,
    /// Bytes stored in the destination for them (compressed, encrypted).
    pub bytes_sent: u64,
    /// Their plaintext bytes.
    pub plain_bytes_sent: u64,
    /// Chunk bytes read from the source.
    pub bytes_read: u64,
    /// WAL files copied.
    pub wal_copied: u64,
    /// WAL files the destination already had.
    pub wal_present: u64,
    /// Bytes of the WAL files copied.
    pub wal_bytes: u64,
    /// WAL files the destination holds with other content (untouched; exit 14).
    pub wal_conflicts: Vec<String>,
    /// Each snapshot copied.
    pub copied: Vec<copy::Copied>,
    /// Source snapshots the destination holds a copy of (recorded for `status`).
    #[serde(skip)]
    pub in_copy: Vec<crate::id::SnapshotId>,
}

impl Summary {
    fn new(s: SnapshotsCopied, w: WalCopied) -> Self {
        Summary {
            snapshots_copied: s.copied.len(),
            snapshots_skipped: s.skipped,
            blobs_sent: s.blobs_sent,
            bytes_sent: s.bytes_sent,
            plain_bytes_sent: s.plain_bytes_sent,
            bytes_read: s.bytes_read,
            wal_copied: w.copied,
            wal_present: w.present,
            wal_bytes: w.bytes,
            wal_conflicts: w.conflicts,
            copied: s.copied,
            in_copy: s.in_copy,
        }
    }

    /// The one-line summary.
    pub fn line(&self, wal: bool) -> String {
        let mut s = format!(
            "copied {} snapshot(s) ({} already there): {} blobs, {} sent ({} read)",
            self.snapshots_copied,
            self.snapshots_skipped,
            self.blobs_sent,
            human_bytes(self.bytes_sent),
            human_bytes(self.bytes_read),
        );
        if wal {
            s.push_str(&format!(
                "; WAL: {} file(s) copied ({}), {} already there",
                self.wal_copied,
                human_bytes(self.wal_bytes),
                self.wal_present
            ));
        }
        s
    }
}

/// Opens the destination for writing with its own passphrase rules (`--to-password-file`,
/// `WAYBACK_TO_PASSWORD`, a prompt; or the key cached by `wayback key unlock --repo REPO2`).
pub fn open_destination(
    to: &std::path::Path,
    password_file: Option<&std::path::Path>,
) -> anyhow::Result<Repository> {
    let ask = || {
        passphrase(
            password_file,
            "WAYBACK_TO_PASSWORD",
            "--to-password-file",
            "destination passphrase: ",
            false,
        )
        .map_err(|e| Error::Invalid(format!("destination: {e:#}")))
    };
    let loc = crate::repo::Location::parse(to.as_os_str())?;
    Ok(Repository::open_cached(&loc, &ask, Access::Write)?)
}

/// Runs one copy: plans the snapshots, copies the WAL (with `wal`), then the snapshots.
/// Errors are the library's; WAL conflicts are in the summary.
pub fn run_copy(
    src: &Repository,
    dst: &Repository,
    sources: &[String],
    wal: Option<&[String]>,
    show_progress: bool,
) -> anyhow::Result<Summary> {
    let plan = copy::plan(src, dst, sources)?;
    let counters = Arc::new(Counters::default());
    let pb = if show_progress {
        progress_bar(
            Some(plan.todo.len() as u64),
            "{prefix} {bar:30} {pos}/{len} {msg}",
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let walked = match wal {
        Some(clusters) => {
            pb.set_prefix("WAL files");
            let r = copy::copy_wal(src, dst, clusters, &|n| pb.set_message(format!("{n}")));
            match r {
                Ok(w) => w,
                Err(WalError::Repo(e)) => return Err(e.into()),
                Err(e) => return Err(e.into()),
            }
        }
        None => WalCopied::default(),
    };
    pb.set_prefix("snapshots");
    let ticker = {
        let (c, pb) = (counters.clone(), pb.clone());
        std::thread::spawn(move || {
            while !pb.is_finished() && !pb.is_hidden() {
                pb.set_message(format!(
                    "{} read, {} sent",
                    human_bytes(c.bytes_read.load(Ordering::Relaxed)),
                    human_bytes(c.bytes_stored.load(Ordering::Relaxed))
                ));
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    let copied = copy::copy_snapshots(src, dst, plan, counters, &|i, _| {
        pb.set_position(i as u64 + 1)
    });
    pb.finish_and_clear();
    let _ = ticker.join();
    Ok(Summary::new(copied?, walked))
}

/// `wayback copy`; exit 14 when a WAL file is in the destination with other content.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let src = ra.open(Access::Read)?;
    let dst = open_destination(&a.to, a.to_password_file.as_deref())?;
    let wal = a.wal.then_some(a.clusters.as_slice());
    let started = chrono::Utc::now();
    let res = run_copy(&src, &dst, &a.sources, wal, true);
    match &res {
        Ok(s) => {
            copy::audit(&src, &a.to, s.snapshots_copied, s.wal_copied);
            copy::record(
                &src,
                &a.to,
                &a.sources,
                started,
                Some(&s.in_copy),
                s.wal_conflicts.first().cloned(),
            )
        }
        Err(e) => copy::record(
            &src,
            &a.to,
            &a.sources,
            started,
            None,
            Some(format!("{e:#}")),
        ),
    }
    let sum = match res {
        Ok(s) => s,
        Err(e) => {
            if let Some(WalError::OtherCluster { .. }) = e.downcast_ref::<WalError>() {
                eprintln!("wayback copy: {e}");
                return Ok(crate::cli::wal::EXIT_WAL_OTHER_CLUSTER);
            }
            return Err(e);
        }
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&sum)?);
    } else {
        outln!("{}", sum.line(a.wal));
    }
    for c in &sum.wal_conflicts {
        eprintln!("wayback copy: {c}");
    }
    Ok(if sum.wal_conflicts.is_empty() {
        0
    } else {
        crate::cli::wal::EXIT_WAL_CONFLICT
    })
}
