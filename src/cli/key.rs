//! `wayback key add|list|remove|passwd`: passphrases are wrapped copies of one master key.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::cli::common::RepoArgs;
use crate::repo::keys::{add_key, list_keys};
use crate::repo::Access;

/// Key subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Add a passphrase (read from --new-password-file, $WAYBACK_NEW_PASSWORD or a prompt).
    Add(NewPass),
    /// List key files.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key file by id (not the one in use, not the last one).
    Remove {
        /// Key id (see `key list`).
        id: String,
    },
    /// Change the passphrase in use: add the new one, remove the current key file.
    Passwd(NewPass),
    /// Check the passphrase once and keep the unlocked key in the kernel keyring (this uid
    /// only), so the next commands skip the passphrase and its ~0.2 s KDF, like ssh-agent.
    Unlock {
        /// How long the key stays cached (e.g. 900, 15m, 2h).
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Drop this repository's cached key now.
    Lock,
}

/// Parses `90` (seconds), or a humantime duration like `90s`, `15m`, `2h`, `1d`. The kernel
/// keeps a key's timeout in 32-bit seconds and treats 0 as "never expires", so both 0 and
/// anything beyond `u32::MAX` seconds are refused instead of silently wrapping or clamping.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        std::time::Duration::from_secs(
            s.parse()
                .map_err(|_| format!("{s:?} seconds is too large"))?,
        )
    } else {
        humantime::parse_duration(s).map_err(|e| format!("not a duration: {s:?}: {e}"))?
    };
    if d.is_zero() {
        return Err("the timeout must be at least 1s".into());
    }
    if d.as_secs() >= u32::MAX as u64 {
        return Err(format!(
            "{s:?} is longer than the kernel keyring allows ({} s, about 136 years)",
            u32::MAX - 1
        ));
    }
    Ok(d)
}

/// Where a new passphrase comes from.
#[derive(clap::Args, Debug)]
pub struct NewPass {
    /// File whose first line is the new passphrase.
    #[arg(long)]
    new_password_file: Option<PathBuf>,
}

fn new_password(np: &NewPass) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = &np.new_password_file {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(s.lines().next().unwrap_or("").as_bytes().to_vec());
    }
    if let Some(p) = crate::cli::common::env_secret("WAYBACK_NEW_PASSWORD") {
        return Ok(p.into_bytes());
    }
    let p = rpassword::prompt_password("new passphrase: ")?;
    if rpassword::prompt_password("again: ")? != p {
        bail!("passphrases do not match");
    }
    Ok(p.into_bytes())
}

/// Runs a key subcommand.
pub fn run(ra: &RepoArgs, cmd: KeyCmd) -> anyhow::Result<i32> {
    match cmd {
        KeyCmd::Add(np) => {
            let repo = ra.open_with_passphrase(Access::Read)?;
            let id = add_key(repo.be.as_ref(), &repo.key, &new_password(&np)?)?;
            crate::audit::note(&repo, "key add", &format!("key {id}"));
            outln!("added key {id}");
        }
        KeyCmd::Unlock { timeout } => {
            let repo = ra.open_with_passphrase(Access::Read)?;
            repo.cache_key(timeout)?;
            eprintln!(
                "key cached in the kernel keyring for {}s (`wayback key lock` drops it)",
                timeout.as_secs()
            );
        }
        KeyCmd::Lock => {
            let loc = ra.location()?;
            if !crate::repo::Repository::forget_cached_key(&loc)? {
                eprintln!("no cached key for {loc}");
            }
        }
        KeyCmd::List { json } => {
            let repo = ra.open(Access::Read)?;
            let keys = list_keys(repo.be.as_ref())?;
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| serde_json::json!({"id": k.id, "current": k.id == repo.key_id, "created": k.file.created, "host": k.file.host, "user": k.file.user}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for k in keys {
                    let cur = if k.id == repo.key_id { "*" } else { " " };
                    outln!(
                        "{cur} {}  {}  {}@{}",
                        k.id,
                        k.file.created,
                        k.file.user,
                        k.file.host
                    );
                }
            }
        }
        KeyCmd::Remove { id } => {
            let repo = ra.open_with_passphrase(Access::Read)?;
            let keys = list_keys(repo.be.as_ref())?;
            if !keys.iter().any(|k| k.id == id) {
                return Err(crate::Error::NotFound(format!("key {id}")).into());
            }
            if id == repo.key_id {
                bail!("refusing to remove the key in use; open with another passphrase first");
            }
            if keys.len() < 2 {
                bail!("refusing to remove the last key");
            }
            repo.be.delete(&format!("keys/{id}"))?;
            crate::audit::note(&repo, "key remove", &format!("key {id}"));
            outln!("removed key {id}");
        }
        KeyCmd::Passwd(np) => {
            let repo = ra.open_with_passphrase(Access::Read)?;
            let id = crate::repo::keys::change_passphrase(
                repo.be.as_ref(),
                &repo.key_id,
                &repo.key,
                &new_password(&np)?,
                crate::crypto::KdfParams::for_new_key(),
            )?;
            crate::audit::note(
                &repo,
                "key passwd",
                &format!("key {} replaced by {id}", repo.key_id),
            );
            outln!("passphrase changed (key {} replaced by {id})", repo.key_id);
        }
    }
    Ok(0)
}
