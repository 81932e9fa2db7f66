//! Command-line interface: argument parsing and presentation only; the work is in the library.
//!
//! Exit codes scripts can rely on (all below 128):
//! 0 success; 1 other error; 2 usage error; 3 snapshot written but incomplete (files changed or
//! unreadable while backing up; like restic); `diff` follows diff(1): 0 same, 1 differ, 2 trouble;
//! 10 wrong passphrase; 11 repository locked by another writer; 12 damaged data found or a
//! file could not be restored (for `repair`: damage remains that the step cannot fix); 13
//! snapshot, path or repository not found; 14 WAL file already archived with different content
//! (`wal-push`, `copy --wal`); 15 WAL segment of another cluster; 16 `status`: a source
//! or WAL cluster is LATE or FAILING, or the last drill or check failed; 17 the repository's
//! file system is full; 18 `drill`: a drill failed for another reason than damaged data (which
//! is 12); 141: stdout was closed before everything was written (a pipe whose reader exited
//! early, as in `wayback snapshots | head -1`).

/// `println!` on stdout that hands a write error to the caller with `?` instead of panicking:
/// a reader that exits early (`| head -1`) is normal, and [`main_entry`] turns the resulting
/// EPIPE into [`EXIT_BROKEN_PIPE`]. Why not SIGPIPE's default action: the agent and the
/// mount must survive a client that hangs up, so SIGPIPE stays ignored process-wide.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

/// `print!` counterpart of [`outln!`].
#[allow(unused_macros)]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($t)*)?
    }};
}

mod agent;
mod audit;
mod backup;
mod check;
mod common;
mod completions;
mod copy;
mod diff;
mod drill;
mod forget;
mod index;
mod init;
mod key;
mod locks;
mod log;
mod ls;
mod mount;
mod pgat;
mod pitr;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod status;
mod wal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use common::{exit_code_for, RepoArgs};

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: any other error.
pub const EXIT_ERROR: i32 = 1;
/// Exit status: wrong passphrase.
pub const EXIT_WRONG_PASSWORD: i32 = 10;
/// Exit status: another writer holds the lock.
pub const EXIT_LOCKED: i32 = 11;
/// Exit status: damaged data.
pub const EXIT_DAMAGED: i32 = 12;
/// Exit status: not found.
pub const EXIT_NOT_FOUND: i32 = 13;
/// Exit status: the repository's file system is full (ENOSPC, or EDQUOT: over quota). Its own
/// code because the fix is not wayback's: free space, then run the same command again. What
/// was acknowledged before is intact and nothing half-written is visible (the crash matrix
/// and `tests/it/fault.rs`'s tmpfs test check it). 14..16 belong to `wal-push` and `status`.
pub const EXIT_NO_SPACE: i32 = 17;

/// Exit status: stdout was closed early (EPIPE). 128 + SIGPIPE, what a shell reports for a
/// writer killed by SIGPIPE (`yes | head -1`), so `set -o pipefail` scripts see the same as
/// with any other tool; not 0, because `wayback cat` into a consumer that died did not
/// deliver the whole file.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Whether an error chain is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Top-level arguments.
#[derive(Parser, Debug)]
#[command(
    name = "wayback",
    version,
    about = "Versioned, encrypted, deduplicated backups; every moment is a directory"
)]
pub struct Cli {
    /// Repository location, shared by all commands.
    #[command(flatten)]
    pub repo: RepoArgs,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// On an S3 repository, retry for up to SECS seconds while another host's lease is in
    /// the way (a prune beside backups, a backup beside a prune) instead of exiting 11.
    #[arg(long, value_name = "SECS", default_value_t = 0, global = true)]
    pub wait: u64,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// The scheduled writer: runs every source of a TOML config on its schedule.
    Agent(agent::Args),
    /// Create a new repository.
    Init(init::Args),
    /// Manage passphrases (key files).
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Back up paths, stdin or a command's output as a new snapshot.
    Backup(backup::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    /// List the lease objects of an S3 repository (writers on every host, and prunes).
    Locks(locks::LocksArgs),
    /// Remove lease objects left by killed writers (--stale-only) or all of them.
    Unlock(locks::UnlockArgs),
    /// List files in a snapshot.
    Ls(ls::Args),
    /// Write one file of a snapshot to stdout.
    Cat(ls::CatArgs),
    /// Restore a snapshot or a path in it.
    Restore(restore::Args),
    /// Verify the repository's structure and, with --read-data, every byte.
    Check(check::Args),
    /// Copy snapshots (and with --wal the WAL archive) to a second repository, sending only
    /// what it lacks, re-encrypted under its key (exit 14: a WAL file there differs).
    Copy(copy::Args),
    /// Compare two snapshots at the cost of the change (exit 0 same, 1 different, 2 trouble).
    Diff(diff::Args),
    /// Versions of one path across a source's snapshots, newest first.
    Log(log::Args),
    /// Remove snapshots by retention policy (grandfather-father-son) or by id; WAL retention.
    Forget(forget::Args),
    /// Delete packs no snapshot or WAL record uses (after a grace period) and repack sparse ones.
    Prune(prune::Args),
    /// Sizes, deduplication and compression, and what forgetting each snapshot would free.
    Stats(stats::Args),
    /// Health of every source and WAL cluster, and space (exit 16 when anything is LATE or FAILING).
    Status(status::Args),
    /// Restore drill: restore a snapshot into private scratch, verify every byte, recover
    /// PostgreSQL on a base backup and query it; the result shows in `status` (exit 12 damaged
    /// data, 18 other failure).
    Drill(drill::Args),
    /// The audit log: who restored, mounted, ran pg-at/pitr/drills, forgot, pruned or changed
    /// keys, and when (exit 12 when an entry fails authentication).
    Audit(audit::Args),
    /// Index maintenance.
    #[command(subcommand)]
    Index(index::IndexCmd),
    /// Mend a damaged repository: rebuild the index, salvage damaged packs, write snapshots
    /// without their damaged files (exit 12 when damage remains that the step cannot fix).
    #[command(subcommand)]
    Repair(repair::RepairCmd),
    /// Mount every snapshot as a read-only directory tree.
    Mount(mount::Args),
    /// Archive one PostgreSQL WAL file (archive_command); exit 0 only once durable.
    WalPush(wal::PushArgs),
    /// Restore one archived WAL file (restore_command); exit 1 when absent.
    WalFetch(wal::FetchArgs),
    /// Prepare a data directory that recovers to a point in time (base backup + WAL).
    Pitr(pitr::Args),
    /// Start PostgreSQL on a point in time without restoring (overlay on the mount).
    PgAt(pgat::Args),
    /// WAL archive status.
    #[command(subcommand)]
    Wal(wal::WalCmd),
    /// Unmount a wayback mount (also cleans a stale one left by a killed process).
    Umount(mount::UmountArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(completions::Args),
    /// Print the man page (roff), or write one per subcommand with --dir.
    Man(completions::ManArgs),
}

/// Parses the command line, runs it and returns the process exit code.
pub fn main_entry() -> i32 {
    common::take_secrets_from_env();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    crate::repo::lock::set_operation(matches.subcommand_name().unwrap_or("wayback"));
    common::init_tracing(cli.verbose);
    crate::repo::lease::set_wait(std::time::Duration::from_secs(cli.wait));
    let r = match cli.cmd {
        Cmd::Init(a) => init::run(&cli.repo, a),
        Cmd::Agent(a) => agent::run(&cli.repo, a),
        Cmd::Key(k) => key::run(&cli.repo, k),
        Cmd::Backup(a) => backup::run(&cli.repo, a),
        Cmd::Snapshots(a) => snapshots::run(&cli.repo, a),
        Cmd::Locks(a) => locks::run_locks(&cli.repo, a),
        Cmd::Unlock(a) => locks::run_unlock(&cli.repo, a),
        Cmd::Ls(a) => ls::run(&cli.repo, a),
        Cmd::Cat(a) => ls::run_cat(&cli.repo, a),
        Cmd::Restore(a) => restore::run(&cli.repo, a),
        Cmd::Check(a) => check::run(&cli.repo, a),
        Cmd::Copy(a) => copy::run(&cli.repo, a),
        Cmd::Index(c) => index::run(&cli.repo, c),
        Cmd::Repair(c) => repair::run(&cli.repo, c),
        Cmd::Forget(a) => forget::run(&cli.repo, a),
        Cmd::Prune(a) => prune::run(&cli.repo, a),
        Cmd::Stats(a) => stats::run(&cli.repo, a),
        Cmd::Status(a) => status::run(&cli.repo, a),
        Cmd::Drill(a) => drill::run(&cli.repo, a),
        Cmd::Audit(a) => audit::run(&cli.repo, a),
        Cmd::Diff(a) => diff::run(&cli.repo, a),
        Cmd::Log(a) => log::run(&cli.repo, a),
        Cmd::Mount(a) => mount::run(&cli.repo, a),
        Cmd::Umount(a) => mount::run_umount(a),
        Cmd::WalPush(a) => wal::run_push(&cli.repo, a),
        Cmd::WalFetch(a) => wal::run_fetch(&cli.repo, a),
        Cmd::Wal(c) => wal::run(&cli.repo, c),
        Cmd::Pitr(a) => pitr::run(&cli.repo, a),
        Cmd::PgAt(a) => pgat::run(&cli.repo, a),
        Cmd::Completions(a) => completions::run(a),
        Cmd::Man(a) => completions::run_man(a),
    };
    // Output still buffered goes now, so a closed pipe is seen here, not lost at exit.
    let flushed = std::io::Write::flush(&mut std::io::stdout());
    match r {
        Ok(_)
            if flushed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            EXIT_BROKEN_PIPE
        }
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => EXIT_BROKEN_PIPE,
        Err(e) => {
            eprintln!("wayback: error: {e:#}");
            if common::index_damaged(&e) {
                eprintln!(
                    "wayback: the index is a cache of the pack headers: `wayback repair index` \
                     rebuilds it"
                );
            }
            exit_code_for(&e)
        }
    }
}
