//! What every command shares: repository location, passphrase, progress, output helpers.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Error;
use crate::repo::{Access, Location, Repository};

/// See [`crate::secrets::take_from_env`].
pub fn take_secrets_from_env() {
    crate::secrets::take_from_env()
}

/// See [`crate::secrets::get`].
pub fn env_secret(name: &str) -> Option<String> {
    crate::secrets::get(name)
}

/// Where the repository is and how to unlock it.
#[derive(clap::Args, Debug, Clone)]
pub struct RepoArgs {
    /// Repository: a directory, or s3://bucket/prefix?endpoint=URL&region=R (S3 keys from
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a 0600 credentials file, never here).
    #[arg(long, env = "WAYBACK_REPO", global = true)]
    pub repo: Option<PathBuf>,
    /// File whose first line is the passphrase (else $WAYBACK_PASSWORD, else a prompt).
    #[arg(long, env = "WAYBACK_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
}

impl RepoArgs {
    /// The repository location as given, or a clear error.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        self.repo
            .clone()
            .context("no repository given: use --repo DIR or set WAYBACK_REPO")
    }

    /// The parsed repository location (a directory or an `s3://` URL).
    pub fn location(&self) -> anyhow::Result<Location> {
        Ok(Location::parse(self.path()?.as_os_str())?)
    }

    /// The passphrase from file, environment or terminal; never from the command line.
    pub fn password(&self, confirm: bool) -> anyhow::Result<Vec<u8>> {
        passphrase(
            self.password_file.as_deref(),
            "WAYBACK_PASSWORD",
            "--password-file",
            "wayback passphrase: ",
            confirm,
        )
    }

    /// Opens the repository with the key cached by `wayback key unlock`, else the passphrase.
    pub fn open(&self, access: Access) -> anyhow::Result<Repository> {
        let loc = self.location()?;
        let ask = || {
            self.password(false)
                .map_err(|e| Error::Invalid(format!("{e:#}")))
        };
        Ok(Repository::open_cached(&loc, &ask, access)?)
    }

    /// Opens the repository with the passphrase, never the cached key (to prove the passphrase).
    pub fn open_with_passphrase(&self, access: Access) -> anyhow::Result<Repository> {
        let loc = self.location()?;
        let pass = self.password(false)?;
        Ok(Repository::open_at(&loc, &pass, access)?)
    }
}

/// A passphrase by the rules every command follows: the first line of `file`, else the
/// environment variable `env` (taken at start, see [`take_secrets_from_env`]), else a prompt
/// on a terminal; never argv. `flag` names the file option in the error.
pub fn passphrase(
    file: Option<&std::path::Path>,
    env: &str,
    flag: &str,
    prompt: &str,
    confirm: bool,
) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f)
            .with_context(|| format!("reading password file {}", f.display()))?;
        return Ok(s.lines().next().unwrap_or("").as_bytes().to_vec());
    }
    if let Some(p) = env_secret(env) {
        return Ok(p.into_bytes());
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password(prompt)?;
        if confirm && rpassword::prompt_password("again: ")? != p {
            bail!("passphrases do not match");
        }
        return Ok(p.into_bytes());
    }
    bail!("no passphrase: set {env}, use {flag}, or run on a terminal")
}

/// Maps an error chain to the documented exit codes.
pub fn exit_code_for(e: &anyhow::Error) -> i32 {
    if is_no_space(e) {
        return super::EXIT_NO_SPACE;
    }
    for cause in e.chain() {
        if let Some(we) = cause.downcast_ref::<Error>() {
            return match we {
                Error::WrongPassword => super::EXIT_WRONG_PASSWORD,
                Error::Locked(_) => super::EXIT_LOCKED,
                Error::Corrupt(_) => super::EXIT_DAMAGED,
                Error::Index(_) if index_damaged(e) => super::EXIT_DAMAGED,
                Error::NotFound(_) => super::EXIT_NOT_FOUND,
                _ => super::EXIT_ERROR,
            };
        }
    }
    super::EXIT_ERROR
}

/// True when RocksDB found the index damaged (its checksums, a truncated or missing file).
/// Why its own test: the index is a cache, so the cure is `wayback repair index`, and the
/// exit code is that of damage (12), not of an unknown failure.
pub fn index_damaged(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<Error>(), Some(Error::Index(m))
            if m.contains("Corruption")
                || m.contains("IO error: No such file")
                // A secondary that finds the MANIFEST it was told of gone: a race with a
                // writer is retried by the next command, a deleted MANIFEST stays.
                || m.contains("deleted the old one"))
    })
}

/// True when the error comes from a full file system (ENOSPC or EDQUOT), whether it reached us
/// as an `io::Error` or as RocksDB's message (the index says "No space left on device").
fn is_no_space(e: &anyhow::Error) -> bool {
    let full = |code: Option<i32>| code == Some(libc::ENOSPC) || code == Some(libc::EDQUOT);
    e.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return full(io.raw_os_error());
        }
        cause
            .downcast_ref::<Error>()
            .is_some_and(Error::is_no_space)
    })
}

/// The directive that hides fuser's redundant second unmount (see `init_tracing`).
const QUIET_FUSER: &str = "fuser::mnt::fuse_pure=off";

/// Sets up `tracing` on stderr.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // fuser 0.15 logs "Unmount failed: Invalid argument" when its session ends after our own
    // (successful) unmount already detached the mount (its is_mounted check reads POLLERR, the
    // sign of a gone mount, as mounted); nothing failed, so it is not shown. Also under a
    // RUST_LOG that does not name fuser: `RUST_LOG=info` printed it at ERROR after every
    // drill of a base backup, which looks like a failure to anyone reading the journal.
    let directives = match std::env::var("RUST_LOG") {
        Ok(env) if env.contains("fuser") => env,
        Ok(env) => format!("{env},{QUIET_FUSER}"),
        Err(_) => format!("{default},{QUIET_FUSER}"),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},{QUIET_FUSER}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress_bar(len: Option<u64>, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
