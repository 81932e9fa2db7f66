//! `wayback diff A B [PATH...]`: exit status like diff(1): 0 same, 1 different, 2 trouble.

use std::io::{IsTerminal, Write};

use crate::cli::common::{human_bytes, RepoArgs};
use crate::cli::ls::{mode_string, node_json};
use crate::diff::{diff_nodes, diff_trees, Change, ChangeKind, DiffOptions, DiffStats};
use crate::repo::{Access, Repository};
use crate::snapshot::{resolve, Snapshot};
use crate::timespec::now_ms;
use crate::tree::reader::{components, read_at, resolve_path, ChunkCache};
use crate::tree::{Node, NodeKind};

/// Arguments of `diff`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Older snapshot: id prefix, `latest`, a time (with --source) or SOURCE@TIME.
    pub a: String,
    /// Newer snapshot, same forms.
    pub b: String,
    /// Limit the comparison to these paths inside the snapshots.
    pub paths: Vec<String>,
    /// Source for `latest` and times.
    #[arg(long)]
    pub source: Option<String>,
    /// One line per path: a letter (A added, D removed, M modified, T type, P metadata) and the path.
    #[arg(long)]
    pub name_status: bool,
    /// With --name-status: NUL-terminated lines, raw path bytes.
    #[arg(short = 'z')]
    pub nul: bool,
    /// One JSON object per change.
    #[arg(long)]
    pub json: bool,
    /// Summary of files and bytes added, removed and changed.
    #[arg(long)]
    pub stat: bool,
    /// Unified diff of small text files.
    #[arg(long)]
    pub content: bool,
    /// Hide metadata-only changes (mode, owner, mtime, xattrs).
    #[arg(long)]
    pub ignore_meta: bool,
}

#[derive(Default)]
struct Summary {
    added: (u64, u64),
    removed: (u64, u64),
    changed: (u64, u64, u64),
    meta: u64,
    types: u64,
}

fn pick<'a>(all: &'a [Snapshot], spec: &str, source: Option<&str>) -> anyhow::Result<&'a Snapshot> {
    Ok(resolve(all, spec, source, now_ms())?)
}

/// Runs the diff; any error is exit 2.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    match run_inner(ra, &a) {
        Ok(differs) => Ok(i32::from(differs)),
        Err(e) => {
            eprintln!("wayback diff: {e:#}");
            Ok(2)
        }
    }
}

fn run_inner(ra: &RepoArgs, a: &Args) -> anyhow::Result<bool> {
    let repo = ra.open(Access::Read)?;
    let all = repo.snapshots()?;
    let sa = pick(&all, &a.a, a.source.as_deref())?;
    let sb = pick(&all, &a.b, a.source.as_deref())?;
    let opts = DiffOptions {
        ignore_meta: a.ignore_meta,
    };
    let color = std::io::stdout().is_terminal() && !a.json && !a.name_status;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut sum = Summary::default();
    let mut any = false;
    let cache = ChunkCache::new(16 << 20);
    let mut emit = |c: Change| -> crate::Result<()> {
        any = true;
        tally(&mut sum, &c);
        let r = print_change(&mut out, &c, a, color);
        if a.content && c.kind == ChangeKind::Modified {
            let _ = out.flush();
            content_diff(&repo, &cache, &c).map_err(|e| crate::Error::io("write", "stdout", e))?;
        }
        r.map_err(|e| crate::Error::io("write", "stdout", e))
    };
    let mut stats = DiffStats::default();
    let paths: Vec<Vec<u8>> = if a.paths.is_empty() {
        vec![Vec::new()]
    } else {
        a.paths
            .iter()
            .map(|p| components(p.as_bytes()).join(&b'/'))
            .collect()
    };
    for p in &paths {
        let s = if p.is_empty() {
            diff_trees(&repo, Some(&sa.root), Some(&sb.root), b"", opts, &mut emit)?
        } else {
            let na = lookup(&repo, sa, p)?;
            let nb = lookup(&repo, sb, p)?;
            match (&na, &nb) {
                (Some(x), Some(y)) if x.kind == NodeKind::Dir && y.kind == NodeKind::Dir => {
                    diff_trees(
                        &repo,
                        x.subtree.as_ref(),
                        y.subtree.as_ref(),
                        p,
                        opts,
                        &mut emit,
                    )?
                }
                _ => diff_nodes(&repo, na.as_ref(), nb.as_ref(), p, opts, &mut emit)?,
            }
        };
        stats.trees_read += s.trees_read;
        stats.subtrees_skipped += s.subtrees_skipped;
    }
    tracing::info!(
        trees_read = stats.trees_read,
        subtrees_skipped = stats.subtrees_skipped,
        "diff cost"
    );
    if a.stat {
        writeln!(
            out,
            "{} added ({}), {} removed ({}), {} modified ({} -> {}), {} type changes, {} metadata-only; {} tree blocks read, {} equal subtrees skipped",
            sum.added.0,
            human_bytes(sum.added.1),
            sum.removed.0,
            human_bytes(sum.removed.1),
            sum.changed.0,
            human_bytes(sum.changed.1),
            human_bytes(sum.changed.2),
            sum.types,
            sum.meta,
            stats.trees_read,
            stats.subtrees_skipped
        )?;
    }
    out.flush()?;
    Ok(any)
}

fn lookup(repo: &Repository, s: &Snapshot, p: &[u8]) -> anyhow::Result<Option<Node>> {
    match resolve_path(repo, &s.root, p) {
        Ok(n) => Ok(n),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn tally(sum: &mut Summary, c: &Change) {
    let files = |n: &Option<Node>| {
        n.as_ref()
            .filter(|n| n.kind == NodeKind::File)
            .map_or(0, |n| n.size)
    };
    match c.kind {
        ChangeKind::Added => {
            sum.added.0 += 1;
            sum.added.1 += files(&c.new);
        }
        ChangeKind::Removed => {
            sum.removed.0 += 1;
            sum.removed.1 += files(&c.old);
        }
        ChangeKind::Modified => {
            sum.changed.0 += 1;
            sum.changed.1 += files(&c.old);
            sum.changed.2 += files(&c.new);
        }
        ChangeKind::Metadata => sum.meta += 1,
        ChangeKind::Type => sum.types += 1,
    }
}

fn print_change(out: &mut dyn Write, c: &Change, a: &Args, color: bool) -> std::io::Result<()> {
    if a.json {
        let mut v = serde_json::json!({
            "path": String::from_utf8_lossy(&c.path),
            "change": c.kind,
        });
        if std::str::from_utf8(&c.path).is_err() {
            v["path_hex"] = serde_json::Value::String(hex::encode(&c.path));
        }
        if let Some(o) = &c.old {
            v["old"] = node_json(&c.path, o);
        }
        if let Some(n) = &c.new {
            v["new"] = node_json(&c.path, n);
        }
        return writeln!(out, "{v}");
    }
    if a.name_status {
        write!(out, "{}\t", c.kind.letter())?;
        out.write_all(&c.path)?;
        return out.write_all(if a.nul { b"\0" } else { b"\n" });
    }
    if a.stat {
        return Ok(());
    }
    let (mark, paint) = match c.kind {
        ChangeKind::Added => ("+", "\x1b[32m"),
        ChangeKind::Removed => ("-", "\x1b[31m"),
        ChangeKind::Modified => ("M", "\x1b[33m"),
        ChangeKind::Type => ("T", "\x1b[35m"),
        ChangeKind::Metadata => ("m", "\x1b[36m"),
    };
    let detail = match (c.kind, &c.old, &c.new) {
        (ChangeKind::Added, _, Some(n)) => format!("{} {}", mode_string(n), human_bytes(n.size)),
        (ChangeKind::Removed, Some(o), _) => format!("{} {}", mode_string(o), human_bytes(o.size)),
        (ChangeKind::Modified, Some(o), Some(n)) => {
            format!("{} -> {}", human_bytes(o.size), human_bytes(n.size))
        }
        (_, Some(o), Some(n)) => format!("{} -> {}", mode_string(o), mode_string(n)),
        _ => String::new(),
    };
    let path = String::from_utf8_lossy(&c.path);
    if color {
        writeln!(out, "{paint}{mark} {path}\x1b[0m  ({detail})")
    } else {
        writeln!(out, "{mark} {path}  ({detail})")
    }
}

/// Prints a unified diff of two small text versions via diff(1) ([`external_diff`]), or says
/// they are binary.
fn content_diff(repo: &Repository, cache: &ChunkCache, c: &Change) -> std::io::Result<()> {
    let (Some(o), Some(n)) = (&c.old, &c.new) else {
        return Ok(());
    };
    if o.kind != NodeKind::File || o.size > 1 << 20 || n.size > 1 << 20 {
        outln!("  (files too large for --content)");
        return Ok(());
    }
    let (Ok(x), Ok(y)) = (
        read_at(repo, cache, o, 0, o.size as usize),
        read_at(repo, cache, n, 0, n.size as usize),
    ) else {
        outln!("  (cannot read content)");
        return Ok(());
    };
    if x.contains(&0) || y.contains(&0) {
        outln!(
            "Binary files a/{0} and b/{0} differ",
            String::from_utf8_lossy(&c.path)
        );
        return Ok(());
    }
    let p = String::from_utf8_lossy(&c.path);
    if let Err(e) = external_diff(&p, &x, &y) {
        eprintln!("wayback diff: cannot run diff(1) on {p}: {e}");
    }
    Ok(())
}

/// Runs `diff -u` on two versions of `path`. They are plaintext from the repository, so they go
/// to files only we can read (0600 in a fresh 0700 directory with an unpredictable name, which
/// nothing planted in advance can stand in for), removed when done; diff(1) gets no passphrase.
fn external_diff(path: &str, old: &[u8], new: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::Builder::new()
        .prefix("wayback-diff-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    let (pa, pb) = (dir.path().join("a"), dir.path().join("b"));
    for (p, data) in [(&pa, old), (&pb, new)] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)?
            .write_all(data)?;
    }
    crate::pg::env::command("diff")
        .args([
            "-u",
            "--label",
            &format!("a/{path}"),
            "--label",
            &format!("b/{path}"),
        ])
        .arg(&pa)
        .arg(&pb)
        .status()?;
    dir.close()
}
