//! `wayback init`.

use crate::cli::common::RepoArgs;
use crate::repo::Repository;

/// Arguments of `init`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Creates the repository.
pub fn run(ra: &RepoArgs, _a: Args) -> anyhow::Result<i32> {
    let path = ra.path()?;
    let pass = ra.password(true)?;
    let repo = Repository::init(&path, &pass)?;
    outln!(
        "created wayback repository {} at {}",
        &repo.config.id[..8],
        path.display()
    );
    Ok(0)
}
