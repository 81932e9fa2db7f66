//! `wayback index rebuild`.

use crate::cli::common::{progress_bar, RepoArgs};
use crate::repo::Repository;

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
            let loc = ra.location()?;
            let pass = ra.password(false)?;
            let be = crate::repo::open_backend(&loc)?;
            let pb = progress_bar(None, "{spinner} {msg}");
            pb.set_message("reading pack headers");
            let (repo, rep) = Repository::rebuild_index_at(&loc, be, &pass)?;
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
