//! `wayback repair index | packs | snapshots` (the work is in `maint::repair`).
//!
//! Exit status: 0 when nothing is left that the step could not mend; 12 when damage remains
//! that this step cannot fix (packs whose headers are unreadable for `index`, blobs lost for
//! `packs`: run `repair snapshots` next; snapshots with an unreadable manifest or root for
//! `snapshots`). A dry run exits the same way for what it found.

use std::collections::HashSet;

use crate::cli::common::{progress_bar, RepoArgs};
use crate::id::PackId;
use crate::index::rebuild::list_pack_files;
use crate::maint::repair::{packs, snapshots};
use crate::pack::read_pack_header;
use crate::repo::backend::LocalBackend;
use crate::repo::{Access, Repository};

/// Repair subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RepairCmd {
    /// Rebuild the index from pack headers (what the old index knew of packs whose header is
    /// damaged is kept, for `repair packs`).
    Index {
        /// Report damaged pack headers and what the index lacks; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON report: `{dry_run, packs, damaged: [{pack, error}], kept, unindexed, stale}`.
        #[arg(long)]
        json: bool,
    },
    /// Copy every intact blob of each damaged pack into a new pack, then move the damaged
    /// pack to `damaged/` in the repository.
    Packs {
        /// Report what would be salvaged and lost; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// JSON report.
        #[arg(long)]
        json: bool,
    },
    /// For each snapshot with damaged files, write a snapshot without them (tag `repaired`).
    Snapshots {
        /// Report what would be omitted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete each damaged snapshot once its repaired copy is written.
        #[arg(long)]
        forget: bool,
        /// JSON report.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a repair subcommand.
pub fn run(ra: &RepoArgs, cmd: RepairCmd) -> anyhow::Result<i32> {
    let damaged = |bad: bool| if bad { crate::cli::EXIT_DAMAGED } else { 0 };
    match cmd {
        RepairCmd::Index { dry_run, json } => {
            let pb = progress_bar(None, "{spinner} {msg}");
            pb.set_message("reading pack headers");
            let (v, bad) = if dry_run {
                index_plan(ra)?
            } else {
                let path = ra.path()?;
                let pass = ra.password(false)?;
                let be = std::sync::Arc::new(LocalBackend::new(&path));
                let (repo, rep, kept) = Repository::repair_index(&path, be, &pass)?;
                let damaged: Vec<_> = rep
                    .damaged
                    .iter()
                    .map(|(p, e)| serde_json::json!({"pack": p.to_hex(), "error": e}))
                    .collect();
                let bad = !damaged.is_empty();
                let v = serde_json::json!({
                    "dry_run": false,
                    "packs": repo.index.packs()?.len(),
                    "damaged": damaged,
                    "kept": kept,
                });
                crate::audit::note(
                    &repo,
                    "repair",
                    &format!(
                        "index: rebuilt, {} damaged pack header(s)",
                        rep.damaged.len()
                    ),
                );
                (v, bad)
            };
            pb.finish_and_clear();
            if json {
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let verb = if dry_run {
                    "would index"
                } else {
                    "index rebuilt:"
                };
                outln!("{verb} {} packs", v["packs"]);
                for d in v["damaged"].as_array().into_iter().flatten() {
                    outln!(
                        "error: pack {} header unreadable: {}",
                        d["pack"].as_str().unwrap_or(""),
                        d["error"].as_str().unwrap_or("")
                    );
                }
                if v["kept"].as_u64().unwrap_or(0) > 0 {
                    outln!(
                        "kept the old index's entries of {} damaged pack(s): run `wayback repair packs`",
                        v["kept"]
                    );
                }
            }
            Ok(damaged(bad))
        }
        RepairCmd::Packs { dry_run, json } => {
            let repo = ra.open(if dry_run { Access::Read } else { Access::Write })?;
            let pb = progress_bar(None, "{spinner} {msg}");
            let rep = packs::repair_packs(&repo, dry_run, &mut |m| pb.set_message(m.to_string()))?;
            pb.finish_and_clear();
            if !dry_run && !rep.damaged.is_empty() {
                crate::audit::note(&repo, "repair", &format!("packs: {}", rep.summary()));
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                outln!(
                    "{} packs read, {} damaged{}",
                    rep.packs_read,
                    rep.damaged.len(),
                    if dry_run {
                        " (dry run: nothing changed)"
                    } else {
                        ""
                    }
                );
                for d in &rep.damaged {
                    outln!(
                        "pack {}: {}; {} of {} located blobs salvaged{}",
                        d.pack,
                        d.why,
                        d.salvaged,
                        d.located,
                        d.quarantined
                            .as_ref()
                            .map(|q| format!(", moved to {q}"))
                            .unwrap_or_default()
                    );
                    for b in &d.lost {
                        outln!("  lost blob {b}");
                    }
                }
                if rep.lost_blobs() > 0 {
                    outln!("blobs were lost: run `wayback repair snapshots`");
                }
            }
            Ok(damaged(rep.lost_blobs() > 0))
        }
        RepairCmd::Snapshots {
            dry_run,
            forget,
            json,
        } => {
            let repo = ra.open(if dry_run { Access::Read } else { Access::Write })?;
            let pb = progress_bar(None, "{spinner} {msg}");
            let rep = snapshots::repair_snapshots(&repo, dry_run, forget, &mut |m| {
                pb.set_message(m.to_string())
            })?;
            pb.finish_and_clear();
            if !dry_run && !rep.repaired.is_empty() {
                crate::audit::note(&repo, "repair", &format!("snapshots: {}", rep.summary()));
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&rep)?);
            } else {
                outln!(
                    "{} snapshots read, {} damaged, {} unrepairable{}",
                    rep.snapshots,
                    rep.repaired.len(),
                    rep.unrepairable.len(),
                    if dry_run {
                        " (dry run: nothing changed)"
                    } else {
                        ""
                    }
                );
                for r in &rep.repaired {
                    let what = match (&r.new, &r.already) {
                        (Some(n), _) => format!("repaired as {}", &n[..8]),
                        (None, Some(a)) => format!("already repaired as {}", &a[..8]),
                        _ => "would be repaired".to_string(),
                    };
                    outln!(
                        "snapshot {} {} {}: {what}{}",
                        &r.original[..8],
                        r.source,
                        r.time,
                        if r.forgotten {
                            ", original forgotten"
                        } else {
                            ""
                        }
                    );
                    for p in &r.omitted {
                        outln!("  omitted /{p}");
                    }
                }
                for u in &rep.unrepairable {
                    outln!("error: snapshot {}: {}", u.snapshot, u.why);
                }
            }
            Ok(damaged(!rep.unrepairable.is_empty()))
        }
    }
}

/// `repair index --dry-run`: which pack headers are unreadable, which packs the index lacks
/// and which it names that are gone; reads headers only.
fn index_plan(ra: &RepoArgs) -> anyhow::Result<(serde_json::Value, bool)> {
    let repo = ra.open(Access::Read)?;
    let indexed: HashSet<PackId> = repo.index.packs()?.into_iter().map(|(p, _)| p).collect();
    let on_disk = list_pack_files(repo.be.as_ref())?;
    let mut damaged = Vec::new();
    let mut readable = 0;
    for p in &on_disk {
        match read_pack_header(repo.be.as_ref(), &repo.key, p) {
            Ok(_) => readable += 1,
            Err(e) => damaged.push(serde_json::json!({"pack": p.to_hex(), "error": e.to_string()})),
        }
    }
    let disk: HashSet<&PackId> = on_disk.iter().collect();
    let bad = !damaged.is_empty();
    Ok((
        serde_json::json!({
            "dry_run": true,
            "packs": readable,
            "damaged": damaged,
            "kept": 0,
            "unindexed": on_disk.iter().filter(|p| !indexed.contains(p)).count(),
            "stale": indexed.iter().filter(|p| !disk.contains(p)).count(),
        }),
        bad,
    ))
}
