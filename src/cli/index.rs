//! `wayback index rebuild`.

use crate::cli::common::{progress_bar, RepoArgs};
use crate::index::rebuild::index_missing_packs;
use crate::repo::lock::WriterLock;
use crate::repo::{Access, Repository};

/// Index subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum IndexCmd {
    /// Recreate the index from the pack files alone.
    Rebuild {
        /// JSON report: `{packs, damaged: [{pack, error}]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an index subcommand.
pub fn run(ra: &RepoArgs, cmd: IndexCmd) -> anyhow::Result<i32> {
    match cmd {
        IndexCmd::Rebuild { json } => {
            let path = ra.path()?;
            let pass = ra.password(false)?;
            {
                // Take the writer lock before touching the index, then start from nothing.
                let _lock = WriterLock::acquire(&path, "index rebuild")?;
                let config = Repository::read_config(&path, &pass)?;
                let idx = crate::repo::index_dir(&path, &config.id)?;
                if idx.exists() {
                    std::fs::remove_dir_all(&idx)?;
                }
                crate::index::Index::open_writer(&idx)?;
            }
            let repo = Repository::open(&path, &pass, Access::Write);
            // Opening as writer already indexes every pack; report what is there.
            let repo = repo?;
            let pb = progress_bar(None, "{spinner} {msg}");
            let rep = index_missing_packs(repo.be.as_ref(), &repo.key, &repo.index, |d, t| {
                pb.set_message(format!("{d}/{t} packs"))
            })?;
            pb.finish_and_clear();
            let packs = repo.index.packs()?.len();
            if json {
                let v = serde_json::json!({
                    "packs": packs,
                    "damaged": rep.damaged.iter().map(|(p, e)| serde_json::json!({"pack": p.to_string(), "error": e})).collect::<Vec<_>>(),
                });
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                outln!("index rebuilt: {packs} packs indexed");
                for (p, e) in &rep.damaged {
                    outln!("error: pack {p} not indexed: {e}");
                }
            }
            Ok(if rep.damaged.is_empty() {
                0
            } else {
                crate::cli::EXIT_DAMAGED
            })
        }
    }
}
