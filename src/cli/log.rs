//! `wayback log --source S PATH`: the versions of one path across time, newest first.

use std::collections::HashMap;

use anyhow::bail;

use crate::cli::common::{human_bytes, RepoArgs};
use crate::id::TreeId;
use crate::repo::Access;
use crate::tree::reader::components;
use crate::tree::{Node, NodeKind, Tree};

/// Arguments of `log`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path inside the source's snapshots.
    pub path: String,
    /// Source name.
    #[arg(long)]
    pub source: String,
    /// One JSON object per version.
    #[arg(long)]
    pub json: bool,
}

/// Lists every snapshot in which the path changed (appeared, changed content or metadata,
/// disappeared). Trees are cached by id, so unchanged directories are read once in total.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| s.source == a.source)
        .collect();
    if snaps.is_empty() {
        return Err(
            crate::Error::NotFound(format!("no snapshots of source '{}'", a.source)).into(),
        );
    }
    let comps: Vec<Vec<u8>> = components(a.path.as_bytes())
        .into_iter()
        .map(|c| c.to_vec())
        .collect();
    if comps.is_empty() {
        bail!("give a path inside the snapshots");
    }
    let mut trees: HashMap<TreeId, Tree> = HashMap::new();
    let mut versions: Vec<(usize, Option<Node>)> = Vec::new();
    let mut last: Option<Option<Node>> = None;
    for (i, s) in snaps.iter().enumerate() {
        let mut tid = Some(s.root);
        let mut node: Option<Node> = None;
        for (k, c) in comps.iter().enumerate() {
            let Some(t) = tid else {
                node = None;
                break;
            };
            let tree = match trees.entry(t) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(repo.read_tree(&t)?),
            };
            node = tree.find(c).cloned();
            tid = match &node {
                Some(n) if n.kind == NodeKind::Dir && k + 1 < comps.len() => n.subtree,
                _ if k + 1 < comps.len() => {
                    node = None;
                    None
                }
                _ => None,
            };
        }
        let same = match (&last, &node) {
            (Some(Some(p)), Some(n)) => {
                p.content == n.content
                    && p.kind == n.kind
                    && p.mode == n.mode
                    && p.mtime_ns == n.mtime_ns
                    && p.uid == n.uid
                    && p.gid == n.gid
                    && p.link_target == n.link_target
                    && p.subtree == n.subtree
            }
            (Some(None), None) => true,
            (None, None) => true,
            _ => false,
        };
        if !same {
            versions.push((i, node.clone()));
        }
        last = Some(node);
    }
    for (i, node) in versions.iter().rev() {
        let s = &snaps[*i];
        if a.json {
            let mut v = serde_json::json!({
                "snapshot": s.id.to_hex(),
                "time": s.time_name(),
                "exists": node.is_some(),
            });
            if let Some(n) = node {
                v["node"] = crate::cli::ls::node_json(a.path.as_bytes(), n);
            }
            outln!("{v}");
        } else {
            match node {
                Some(n) => outln!(
                    "{}  {}  {:>10}  {}",
                    s.time_name(),
                    s.id.short(),
                    human_bytes(n.size),
                    n.content_digest()
                        .unwrap_or_else(|| format!("{:?}", n.kind).to_lowercase())
                ),
                None => outln!("{}  {}  {:>10}  (absent)", s.time_name(), s.id.short(), "-"),
            }
        }
    }
    Ok(0)
}
