//! `wayback ls` and `wayback cat`.

use std::io::Write;

use anyhow::Context;

use crate::cli::common::RepoArgs;
use crate::repo::{Access, Repository};
use crate::snapshot::{resolve, Snapshot};
use crate::timespec::{format_time, now_ms};
use crate::tree::reader::{resolve_path, walk, ChunkCache};
use crate::tree::{Node, NodeKind};

/// Arguments of `ls`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// SNAP[:PATH]: snapshot id prefix, `latest`, a time (with --source) or SOURCE@TIME.
    pub spec: String,
    /// Source for `latest` or a time.
    #[arg(long)]
    pub source: Option<String>,
    /// Mode, owner, size and time columns.
    #[arg(short, long)]
    pub long: bool,
    /// List recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `cat`.
#[derive(clap::Args, Debug)]
pub struct CatArgs {
    /// SNAP:PATH.
    pub spec: String,
    /// Source for `latest` or a time.
    #[arg(long)]
    pub source: Option<String>,
}

/// Splits `SNAP[:PATH]`. A time may contain colons, so the path starts at the first `:/` or,
/// failing that, at a colon after which the rest is not part of a time.
pub fn split_spec(spec: &str) -> (&str, &str) {
    let now = now_ms();
    // A snapshot part is a time when what follows an optional `SOURCE@` parses as one.
    let is_time = |h: &str| {
        let base = h.rsplit_once('@').map_or(h, |(_, t)| t);
        crate::timespec::parse_time(base, now).is_some()
    };
    if let Some(i) = spec.find(":/") {
        return (&spec[..i], &spec[i + 1..]);
    }
    if is_time(spec) {
        return (spec, "");
    }
    for (i, _) in spec
        .match_indices(':')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let head = &spec[..i];
        if is_time(head) || !head.contains(':') {
            return (head, &spec[i + 1..]);
        }
    }
    (spec, "")
}

/// Resolves `SNAP[:PATH]` to a snapshot and path.
pub fn resolve_spec(
    repo: &Repository,
    spec: &str,
    source: Option<&str>,
) -> anyhow::Result<(Snapshot, Vec<u8>)> {
    let (s, p) = split_spec(spec);
    let snaps = repo.snapshots()?;
    let snap = resolve(&snaps, s, source, now_ms())?.clone();
    Ok((snap, p.as_bytes().to_vec()))
}

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDev => 'c',
        NodeKind::BlockDev => 'b',
        NodeKind::Socket => 's',
    }
}

/// `ls -l` style permission string.
pub fn mode_string(n: &Node) -> String {
    let mut s = String::new();
    s.push(kind_char(n.kind));
    for shift in [6, 3, 0] {
        let b = (n.mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// JSON description of a node (shared by ls and diff).
pub fn node_json(path: &[u8], n: &Node) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": String::from_utf8_lossy(path),
        "name": n.name_lossy(),
        "type": format!("{:?}", n.kind).to_lowercase(),
        "mode": n.mode,
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime": format_time(n.mtime_ns.div_euclid(1_000_000)),
        "mtime_ns": n.mtime_ns,
    });
    if std::str::from_utf8(path).is_err() {
        v["path_hex"] = serde_json::Value::String(hex::encode(path));
    }
    if let Some(t) = &n.link_target {
        v["link_target"] = serde_json::Value::String(String::from_utf8_lossy(t).into_owned());
    }
    if let Some(d) = n.content_digest() {
        v["digest"] = serde_json::Value::String(d);
    }
    v
}

/// Lists entries.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let (snap, path) = resolve_spec(&repo, &a.spec, a.source.as_deref())?;
    let node = resolve_path(&repo, &snap.root, &path)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut print = |p: &[u8], n: &Node| -> crate::Result<()> {
        let r = if a.json {
            writeln!(out, "{}", node_json(p, n))
        } else if a.long {
            let target = n
                .link_target
                .as_ref()
                .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:>5} {:>5} {:>12} {} {}{}",
                mode_string(n),
                n.uid,
                n.gid,
                n.size,
                format_time(n.mtime_ns.div_euclid(1_000_000)),
                String::from_utf8_lossy(p),
                target
            )
        } else {
            writeln!(out, "{}", String::from_utf8_lossy(p))
        };
        r.map_err(|e| crate::Error::io("write", "stdout", e))
    };
    let prefix = path.strip_prefix(b"/").unwrap_or(&path).to_vec();
    let (tree, base) = match &node {
        None => (Some(snap.root), Vec::new()),
        Some(n) if n.kind == NodeKind::Dir => (n.subtree, prefix.clone()),
        Some(n) => {
            print(&prefix, n)?;
            (None, Vec::new())
        }
    };
    if let Some(t) = tree {
        if a.recursive {
            walk(&repo, &t, &base, &mut print)?;
        } else {
            for n in &repo.read_tree(&t)?.nodes {
                let mut p = base.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&n.name);
                print(&p, n)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

/// Streams one file to stdout; damaged data stops with an error (never wrong bytes).
pub fn run_cat(ra: &RepoArgs, a: CatArgs) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let (snap, path) = resolve_spec(&repo, &a.spec, a.source.as_deref())?;
    let node =
        resolve_path(&repo, &snap.root, &path)?.context("cat needs a file path: SNAP:PATH")?;
    if node.kind != NodeKind::File {
        anyhow::bail!("{} is not a regular file", String::from_utf8_lossy(&path));
    }
    let layout = crate::tree::FileLayout::new(&node)?;
    let cache = ChunkCache::new(16 << 20);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for p in layout.pieces(0, layout.size()) {
        let what = || {
            format!(
                "reading {} in snapshot {}",
                String::from_utf8_lossy(&path),
                snap.id.short()
            )
        };
        let data = cache
            .get(&repo, &layout.chunks()[p.index].id)
            .with_context(what)?;
        let piece = layout.slice(&p, &data).with_context(what)?;
        // A reader gone early (EPIPE) ends with exit 141 in `main_entry`: the file was not
        // delivered whole, so this must not look like success.
        out.write_all(piece)?;
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::split_spec;

    #[test]
    fn split_spec_handles_times_with_colons() {
        assert_eq!(
            split_spec("s@2025-09-18T01:26:12.205Z"),
            ("s@2025-09-18T01:26:12.205Z", "")
        );
        assert_eq!(split_spec("s@2099-01-01T00:00"), ("s@2099-01-01T00:00", ""));
        assert_eq!(
            split_spec("s@2025-09-18T01:26:/a/b"),
            ("s@2025-09-18T01:26", "/a/b")
        );
        assert_eq!(split_spec("latest:/etc"), ("latest", "/etc"));
        assert_eq!(split_spec("abcd1234:etc/x"), ("abcd1234", "etc/x"));
        assert_eq!(split_spec("2025-09-18T02:00"), ("2025-09-18T02:00", ""));
    }
}
