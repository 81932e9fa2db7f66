//! `wayback init`.

use crate::cli::common::RepoArgs;
use crate::repo::Repository;

/// Arguments of `init`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// zstd level new blobs are compressed at (1-19); a repository-wide setting, fixed here.
    /// Higher levels save a few percent of space for much more CPU per backup.
    #[arg(long, default_value_t = crate::repo::DEFAULT_ZSTD_LEVEL,
          value_parser = clap::value_parser!(i32).range(
              *crate::repo::ZSTD_LEVELS.start() as i64..=*crate::repo::ZSTD_LEVELS.end() as i64))]
    pub zstd_level: i32,
}

/// Creates the repository.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let loc = ra.location()?;
    let pass = ra.password(true)?;
    let repo = Repository::init_at_level(&loc, &pass, a.zstd_level)?;
    outln!(
        "created wayback repository {} at {loc}",
        &repo.config.id[..8],
    );
    Ok(0)
}
