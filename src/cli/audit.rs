//! `wayback audit [--json]`: who restored, mounted, forgot, pruned or changed keys, and when.

use crate::cli::common::RepoArgs;
use crate::repo::Access;

/// Arguments of `audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only entries of this operation (`restore`, `mount`, `pg-at`, `pitr`, `drill`, `forget`,
    /// `prune`, `key add`, `key remove`, `key passwd`).
    #[arg(long)]
    pub op: Option<String>,
    /// JSON array of `{version, time, op, what, user, uid, sudo_user, host, pid}`.
    #[arg(long)]
    pub json: bool,
}

/// Lists the audit log, oldest first; exit 12 when an entry failed authentication.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let repo = ra.open(Access::Read)?;
    let all = crate::audit::list(&repo)?;
    let damaged = all.iter().any(|e| e.op == "damaged");
    let shown: Vec<_> = all
        .into_iter()
        .filter(|e| {
            a.op.as_deref()
                .is_none_or(|o| e.op == o || e.op == "damaged")
        })
        .collect();
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        for e in &shown {
            let who = match &e.sudo_user {
                Some(s) => format!("{} (sudo by {s})", e.user),
                None => e.user.clone(),
            };
            outln!("{}  {:<10} {}@{}  {}", e.time, e.op, who, e.host, e.what);
        }
        outln!(
            "{} entr{}",
            shown.len(),
            if shown.len() == 1 { "y" } else { "ies" }
        );
    }
    Ok(if damaged { crate::cli::EXIT_DAMAGED } else { 0 })
}
