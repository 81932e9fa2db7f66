//! `wayback init`.

use crate::cli::common::RepoArgs;
use crate::repo::Repository;

/// Arguments of `init`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Creates the repository.
pub fn run(ra: &RepoArgs, _a: Args) -> anyhow::Result<i32> {
    let loc = ra.location()?;
    let pass = ra.password(true)?;
    let repo = Repository::init_at(&loc, &pass)?;
    outln!(
        "created wayback repository {} at {loc}",
        &repo.config.id[..8],
    );
    Ok(0)
}
