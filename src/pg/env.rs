//! The environment of every program wayback starts for PostgreSQL work (and `diff`'s diff(1)).
//!
//! Why: a passphrase in `WAYBACK_PASSWORD` is inherited by every child that is not told
//! otherwise, and a PostgreSQL server keeps its environment for its whole life, readable in
//! `/proc/<pid>/environ` by its owner and root, and by anything the server runs
//! (`restore_command`, extensions). No child of these commands needs the passphrase: pg-at's
//! server reads WAL through pg-at's own mount, and `pitr` names a password file in
//! `restore_command` instead.

use std::ffi::OsStr;
use std::process::Command;

/// Variables that carry a passphrase or point to one; removed from every child's environment.
pub const SECRET_VARS: [&str; 5] = [
    "WAYBACK_PASSWORD",
    "WAYBACK_NEW_PASSWORD",
    "WAYBACK_PASSWORD_FILE",
    "WAYBACK_TO_PASSWORD",
    "WAYBACK_TO_PASSWORD_FILE",
];

/// A [`Command`] for `program` whose environment is ours without [`SECRET_VARS`].
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    for v in SECRET_VARS {
        c.env_remove(v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_removed() {
        let c = command("env");
        let mut removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        removed.sort();
        let mut want = SECRET_VARS.to_vec();
        want.sort();
        assert_eq!(removed, want);
    }
}
