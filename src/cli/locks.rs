//! `wayback locks` and `wayback unlock`: the lease objects of an S3 repository.
//!
//! Why only S3: a local repository's writers hold an `flock` the kernel drops when they die,
//! so there is never anything to unlock; `locks` says so instead of listing nothing.

use crate::cli::common::RepoArgs;
use crate::repo::lease::{self, LeaseConfig, LockInfo};
use crate::repo::Location;

/// Arguments of `locks`.
#[derive(clap::Args, Debug)]
pub struct LocksArgs {
    /// JSON array `[{name, fresh, body: {kind, host, pid, operation, created, refreshed,
    /// lease_secs} | null, error}]`.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `unlock`.
#[derive(clap::Args, Debug)]
pub struct UnlockArgs {
    /// Remove only leases that are stale (not refreshed for their lease time plus the
    /// margin) or unreadable; without it every lease goes, also those of live writers.
    #[arg(long)]
    pub stale_only: bool,
    /// JSON array of the removed lock objects (as `locks --json`).
    #[arg(long)]
    pub json: bool,
}

fn open(
    ra: &RepoArgs,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<dyn crate::repo::backend::Backend>,
        crate::crypto::MasterKey,
    )>,
> {
    let loc = ra.location()?;
    if let Location::Local(_) = loc {
        return Ok(None);
    }
    let be = crate::repo::open_backend(&loc)?;
    let pass = ra.password(false)?;
    let (_, key) = crate::repo::keys::unlock(be.as_ref(), &pass)?;
    Ok(Some((be, key)))
}

fn print(list: &[LockInfo], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    for l in list {
        let state = if l.fresh { "fresh" } else { "stale" };
        match &l.body {
            Some(b) => outln!("{state:<6} {}  {}", l.name, b.describe()),
            None => outln!(
                "{state:<6} {}  unreadable: {}",
                l.name,
                l.error.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(())
}

const LOCAL: &str = "a local repository has no lease objects: its writers hold an flock, which \
                     the kernel drops when they exit";

/// Lists the lease objects.
pub fn run_locks(ra: &RepoArgs, a: LocksArgs) -> anyhow::Result<i32> {
    let Some((be, key)) = open(ra)? else {
        if a.json {
            outln!("[]");
        } else {
            eprintln!("wayback: {LOCAL}");
        }
        return Ok(0);
    };
    print(
        &lease::list(be.as_ref(), &key, &LeaseConfig::from_env())?,
        a.json,
    )?;
    Ok(0)
}

/// Removes lease objects (all, or the stale ones).
pub fn run_unlock(ra: &RepoArgs, a: UnlockArgs) -> anyhow::Result<i32> {
    let Some((be, key)) = open(ra)? else {
        if a.json {
            outln!("[]");
        } else {
            eprintln!("wayback: {LOCAL}");
        }
        return Ok(0);
    };
    let gone = lease::remove(be.as_ref(), &key, &LeaseConfig::from_env(), a.stale_only)?;
    if a.json {
        print(&gone, true)?;
    } else {
        for l in &gone {
            outln!("removed {}", l.name);
        }
        if gone.is_empty() {
            outln!("no lock objects removed");
        }
    }
    Ok(0)
}
