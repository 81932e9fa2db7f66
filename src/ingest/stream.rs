//! Backing up one stream (stdin or a command's stdout) as one file.
//!
//! Memory is bounded by the chunker buffer whatever the stream size. A command that exits
//! non-zero fails the backup before the manifest is written, so nothing half-written is visible
//! (its blobs stay unreferenced until prune).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::BlobKind;
use crate::ingest::fs::hostname;
use crate::ingest::{with_saver, Counters};
use crate::repo::Repository;
use crate::snapshot::{DbPoint, Snapshot, SnapshotKind, SnapshotStats};
use crate::timespec::now_ms;
use crate::tree::{ChunkRef, Node, NodeKind, Tree};

/// Where the stream comes from.
pub enum StreamInput {
    /// This process's standard input.
    Stdin,
    /// A shell command whose stdout is the stream (`sh -c`).
    Command(String),
}

/// A stream backup request.
pub struct StreamBackup {
    /// Source name.
    pub source: String,
    /// File name inside the snapshot (e.g. `app.dump`).
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Input.
    pub input: StreamInput,
}

/// Chunks `reader` into the repository, returning the file node.
pub fn store_stream(
    repo: &Repository,
    saver: &crate::ingest::Saver,
    reader: impl Read,
    name: &str,
) -> Result<Node> {
    let mut ch = Chunker::new(reader, repo.config.chunker);
    let mut node = Node::new(name.as_bytes().to_vec(), NodeKind::File);
    loop {
        match ch.next_chunk() {
            Ok(Some(c)) => {
                let id = saver.save(BlobKind::Data, c)?;
                node.content.push(ChunkRef {
                    id,
                    len: c.len() as u32,
                });
                saver
                    .counters
                    .bytes_read
                    .fetch_add(c.len() as u64, Ordering::Relaxed);
            }
            Ok(None) => break,
            Err(e) => return Err(Error::io("read stream", name, e)),
        }
    }
    node.size = ch.consumed;
    node.blocks = node.size.div_ceil(512);
    node.mode = 0o600;
    node.uid = nix::unistd::getuid().as_raw();
    node.gid = nix::unistd::getgid().as_raw();
    node.mtime_ns = now_ms() * 1_000_000;
    node.ctime_ns = node.mtime_ns;
    Ok(node)
}

/// Environment variables that carry a passphrase: never passed to a command wayback runs (a
/// dump command, `pg_basebackup`, anything it starts, would otherwise see the repository's
/// passphrase in its environment and in `/proc/PID/environ`). `WAYBACK_PASSWORD_FILE` and
/// `WAYBACK_REPO` stay: they name files, which a child can only read if its uid already may.
pub use crate::secrets::SECRET_ENV;

/// Runs `sh -c cmd` without the passphrase variables ([`SECRET_ENV`]), hands its stdout to
/// `consume`, then fails if either failed. A consumer that gives up early drops the pipe (the
/// command gets EPIPE) and the command is killed, so waiting for it can never hang. A
/// consumer that succeeds may have stopped before the end (a tar reader stops at the
/// end-of-archive blocks; GNU tar and pg_basebackup may still be writing padding): the rest is
/// read and discarded, so the command is not killed by SIGPIPE after a complete backup.
fn with_command_stdout<T>(
    cmd: &str,
    consume: impl FnOnce(&mut std::process::ChildStdout) -> Result<T>,
) -> Result<T> {
    let mut command = Command::new("sh");
    for k in SECRET_ENV {
        command.env_remove(k);
    }
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Command(format!("cannot start `{cmd}`: {e}")))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let r = consume(&mut out).and_then(|v| {
        std::io::copy(&mut out, &mut std::io::sink())
            .map_err(|e| Error::io("read the end of the output of", cmd, e))?;
        Ok(v)
    });
    drop(out);
    if r.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| Error::Command(format!("`{cmd}`: {e}")))?;
    let v = r?;
    if !status.success() {
        return Err(Error::Command(format!(
            "`{cmd}` exited with {status}; no snapshot was written"
        )));
    }
    Ok(v)
}

/// Runs a stream backup and commits its snapshot.
pub fn backup(repo: &Repository, req: &StreamBackup, counters: Arc<Counters>) -> Result<Snapshot> {
    let started = std::time::Instant::now();
    let time = now_ms();
    if req.name.is_empty() || req.name.contains('/') || req.name == "." || req.name == ".." {
        return Err(Error::Invalid(format!(
            "'{}' is not a valid file name",
            req.name
        )));
    }
    let (root, node, desc) = with_saver(repo, counters.clone(), |saver| {
        let (node, desc) = match &req.input {
            StreamInput::Stdin => (
                store_stream(repo, saver, std::io::stdin().lock(), &req.name)?,
                "stdin".to_string(),
            ),
            StreamInput::Command(cmd) => (
                with_command_stdout(cmd, |out| store_stream(repo, saver, out, &req.name))?,
                format!("command: {cmd}"),
            ),
        };
        let mut tree = Tree {
            nodes: vec![node.clone()],
        };
        Ok((saver.save_tree(&mut tree)?, node, desc))
    })?;
    let mut snap = Snapshot {
        id: Default::default(),
        version: 0,
        source: req.source.clone(),
        time,
        host: hostname(),
        tags: req.tags.clone(),
        kind: SnapshotKind::Dump,
        paths: vec![desc],
        root,
        root_meta: None,
        parent: None,
        stats: SnapshotStats {
            files: 1,
            total_bytes: node.size,
            bytes_read: node.size,
            bytes_added: counters.bytes_added.load(Ordering::Relaxed),
            bytes_stored: counters.bytes_stored.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        },
        warnings: vec![],
        complete: true,
        db: None,
        repaired_from: None,
        copied_from: None,
    };
    repo.save_snapshot(&mut snap)?;
    Ok(snap)
}

/// Reads the WAL range a base backup needs from its `backup_label` and `backup_manifest`.
pub fn db_point(
    kept: &std::collections::HashMap<String, Vec<u8>>,
    cluster: Option<String>,
) -> DbPoint {
    let mut p = DbPoint {
        cluster,
        ..Default::default()
    };
    if let Some(label) = kept.get("backup_label") {
        for line in String::from_utf8_lossy(label).lines() {
            if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
                let mut it = rest.split_whitespace();
                p.start_lsn = it.next().map(str::to_string);
                p.wal_start = rest
                    .split("(file ")
                    .nth(1)
                    .map(|f| f.trim_end_matches(')').to_string());
            } else if let Some(t) = line.strip_prefix("START TIMELINE: ") {
                p.timeline = t.trim().parse().ok();
            }
        }
    }
    if let Some(m) = kept.get("backup_manifest") {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(m) {
            if let Some(r) = v["WAL-Ranges"].as_array().and_then(|a| a.last()) {
                p.stop_lsn = r["End-LSN"].as_str().map(str::to_string);
                let tli = r["Timeline"].as_u64().unwrap_or(1) as u32;
                // The segment size follows from the start segment's name and LSN (clusters
                // made with `initdb --wal-segsize` differ from the 16 MiB default).
                let seg_size = p
                    .start_lsn
                    .as_deref()
                    .and_then(crate::wal::names::parse_lsn)
                    .zip(p.wal_start.as_deref())
                    .and_then(|(lsn, name)| crate::wal::names::segment_size_for(lsn, name))
                    .unwrap_or(16 << 20);
                if let Some(lsn) = p.stop_lsn.as_deref().and_then(crate::wal::names::parse_lsn) {
                    p.wal_stop = Some(crate::wal::names::segment_name(
                        tli,
                        lsn.saturating_sub(1),
                        seg_size,
                    ));
                }
            }
        }
    }
    p
}

/// Runs a base-backup command (e.g. `pg_basebackup -D - -Ft -X none`), unpacks its tar stream
/// into a snapshot tree and records the WAL range it needs. A failing command keeps nothing
/// visible.
pub fn backup_basebackup(
    repo: &Repository,
    source: &str,
    cmd: &str,
    tags: &[String],
    cluster: Option<String>,
    counters: Arc<Counters>,
) -> Result<Snapshot> {
    let started = std::time::Instant::now();
    let time = now_ms();
    let un = with_saver(repo, counters.clone(), |saver| {
        with_command_stdout(cmd, |out| crate::ingest::tar::store_tar(repo, saver, out))
    })?;
    let mut stats = un.stats.clone();
    stats.bytes_added = counters.bytes_added.load(Ordering::Relaxed);
    stats.bytes_stored = counters.bytes_stored.load(Ordering::Relaxed);
    stats.duration_ms = started.elapsed().as_millis() as u64;
    let mut snap = Snapshot {
        id: Default::default(),
        version: 0,
        source: source.to_string(),
        time,
        host: hostname(),
        tags: tags.to_vec(),
        kind: SnapshotKind::Basebackup,
        paths: vec![format!("command: {cmd}")],
        root: un.root,
        root_meta: Some(un.root_meta),
        parent: None,
        stats,
        warnings: vec![],
        complete: true,
        db: Some(db_point(&un.kept, cluster)),
        repaired_from: None,
        copied_from: None,
    };
    repo.save_snapshot(&mut snap)?;
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, end_lsn: &str) -> DbPoint {
        let mut kept = std::collections::HashMap::new();
        kept.insert("backup_label".to_string(), label.as_bytes().to_vec());
        let manifest = serde_json::json!({
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/8000028", "End-LSN": end_lsn}]
        });
        kept.insert(
            "backup_manifest".to_string(),
            serde_json::to_vec(&manifest).unwrap(),
        );
        db_point(&kept, Some("main".into()))
    }

    #[test]
    fn wal_range_uses_the_clusters_segment_size() {
        // initdb --wal-segsize 64: 0/8000028 is in segment 2, 0/C000100 in segment 3.
        let p = point(
            "START WAL LOCATION: 0/8000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
            "0/C000100",
        );
        assert_eq!(p.wal_start.as_deref(), Some("000000010000000000000002"));
        assert_eq!(p.wal_stop.as_deref(), Some("000000010000000000000003"));
        assert_eq!(p.timeline, Some(1));
        // The default 16 MiB: 0/8000028 is segment 8.
        let p = point(
            "START WAL LOCATION: 0/8000028 (file 000000010000000000000008)\n",
            "0/C000100",
        );
        assert_eq!(p.wal_stop.as_deref(), Some("00000001000000000000000C"));
    }
}
