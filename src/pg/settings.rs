//! Recovery settings: the lines wayback appends to a data directory's `postgresql.auto.conf`.
//!
//! Why one writer: values are paths and commands built from paths (scratch directories, mount
//! points, the repository, a password file), and a path may hold a quote, a backslash or a `%`.
//! PostgreSQL reads a quoted configuration value with `''` or `\'` for a quote and `\` as an
//! escape; `restore_command` is then expanded (`%f`, `%p`, `%%`) and run by `sh -c`. Each layer
//! is quoted here, once, so a hand-written `format!` cannot forget one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// A value quoted for `postgresql.conf` / `postgresql.auto.conf`: in single quotes, a quote
/// doubled, a backslash doubled, a newline as `\n` (the file's lexer allows no raw newline in a
/// string). Any setting may be given quoted, whatever its type. NUL cannot be represented.
pub fn quote(value: &str) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::Invalid(format!(
            "a PostgreSQL setting cannot hold a NUL byte: {value:?}"
        )));
    }
    let mut q = String::with_capacity(value.len() + 2);
    q.push('\'');
    for c in value.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('\'');
    Ok(q)
}

/// One literal word for `restore_command`/`archive_command`: quoted for `sh` (single quotes,
/// `'\''` for a quote) and with `%` doubled, so PostgreSQL's `%f`/`%p` expansion leaves it as is.
pub fn command_word(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''").replace('%', "%%"))
}

/// A path as UTF-8, for a setting (the configuration file is text).
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| {
        Error::Invalid(format!(
            "{} is not UTF-8; PostgreSQL settings need text paths",
            p.display()
        ))
    })
}

/// `restore_command` copying from a wayback mount: `cp '<mount>/wal/<cluster>/'%f "%p"`.
pub fn mount_restore_command(mount: &Path, cluster: &str) -> Result<String> {
    let dir = format!("{}/wal/{cluster}/", path_str(mount)?);
    Ok(format!("cp {}%f \"%p\"", command_word(&dir)))
}

/// `restore_command` running `wal-fetch`: `'<exe>' '--repo' '<repo>' ['--password-file' '<f>']
/// 'wal-fetch' '--cluster' '<cluster>' %f "%p"`. Paths should be absolute: the server runs it
/// in its data directory.
pub fn wal_fetch_restore_command(
    exe: &Path,
    repo: &Path,
    password_file: Option<&Path>,
    cluster: &str,
) -> Result<String> {
    let mut words = vec![path_str(exe)?, "--repo", path_str(repo)?];
    if let Some(p) = password_file {
        words.extend(["--password-file", path_str(p)?]);
    }
    words.extend(["wal-fetch", "--cluster", cluster]);
    let mut cmd = words
        .iter()
        .map(|w| command_word(w))
        .collect::<Vec<_>>()
        .join(" ");
    cmd.push_str(" %f \"%p\"");
    Ok(cmd)
}

/// A list element of `unix_socket_directories` (a comma-separated list): in double quotes,
/// `""` for a double quote, so commas and spaces in the path survive.
pub fn list_element(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `recovery_target_time` for `t` (Unix milliseconds): `YYYY-MM-DD HH:MM:SS.mmm+00`.
pub fn target_time(t: i64) -> String {
    crate::timespec::format_time(t)
        .replace('T', " ")
        .replace('Z', "+00")
}

/// Settings appended, after a comment line, to `postgresql.auto.conf`: later lines win there,
/// so they override the base backup's own.
#[derive(Debug, Default, Clone)]
pub struct RecoverySettings {
    comment: String,
    lines: Vec<(String, String)>,
}

impl RecoverySettings {
    /// Settings introduced by `# <comment>`.
    pub fn new(comment: &str) -> RecoverySettings {
        RecoverySettings {
            comment: comment.replace('\n', " "),
            lines: Vec::new(),
        }
    }

    /// Adds `key = '<value>'` (quoted with [`quote`]).
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        self.lines.push((key.to_string(), quote(value)?));
        Ok(self)
    }

    /// The text appended: a blank line, the comment, one `key = 'value'` line per setting.
    pub fn render(&self) -> String {
        let mut s = format!("\n# {}\n", self.comment);
        for (k, v) in &self.lines {
            let _ = writeln!(s, "{k} = {v}");
        }
        s
    }

    /// Appends [`Self::render`] to `<data>/postgresql.auto.conf` (created 0600 if missing).
    /// A symlink there is refused, not followed: the data directory belongs to the database's
    /// owner, and root must not append to whatever file they point it at.
    pub fn append_to(&self, data: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let conf = data.join("postgresql.auto.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&conf)
            .and_then(|mut f| f.write_all(self.render().as_bytes()))
            .map_err(|e| Error::io("appending recovery settings", conf, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// PostgreSQL's reading of a quoted value (guc-file.l's STRING token, then
    /// DeescapeQuotedString), for the escapes [`quote`] produces; None if the lexer would not
    /// accept the token.
    fn unquote(q: &str) -> Option<String> {
        let inner = q.strip_prefix('\'')?.strip_suffix('\'')?;
        let mut out = String::new();
        let mut it = inner.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\n' => return None,
                '\'' => {
                    if it.next()? != '\'' {
                        return None;
                    }
                    out.push('\'');
                }
                '\\' => match it.next()? {
                    'n' => out.push('\n'),
                    '\n' => return None,
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
        Some(out)
    }

    #[test]
    fn quotes_backslashes_and_newlines_are_escaped() {
        assert_eq!(quote("plain").unwrap(), "'plain'");
        assert_eq!(quote("it's").unwrap(), "'it''s'");
        assert_eq!(quote(r"a\b").unwrap(), r"'a\\b'");
        assert_eq!(quote("a\nb").unwrap(), r"'a\nb'");
        assert_eq!(quote("").unwrap(), "''");
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn command_words_survive_the_shell_and_percent_expansion() {
        assert_eq!(command_word("/tmp/it's 100%"), r"'/tmp/it'\''s 100%%'");
        // Through sh: the word comes out whole (PostgreSQL has turned %% back into % first).
        let w = command_word("/tmp/it's a \"dir\" $HOME `x` \\");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", w.replace("%%", "%")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "/tmp/it's a \"dir\" $HOME `x` \\"
        );
    }

    #[test]
    fn restore_commands_quote_every_path() {
        let c = mount_restore_command(Path::new("/s/it's"), "main").unwrap();
        assert_eq!(c, r#"cp '/s/it'\''s/wal/main/'%f "%p""#);
        let c = wal_fetch_restore_command(
            Path::new("/bin/wayback"),
            Path::new("/r 1"),
            Some(Path::new("/pw%")),
            "main",
        )
        .unwrap();
        assert_eq!(
            c,
            r#"'/bin/wayback' '--repo' '/r 1' '--password-file' '/pw%%' 'wal-fetch' '--cluster' 'main' %f "%p""#
        );
    }

    #[test]
    fn rendered_settings_override_in_order() {
        let mut s = RecoverySettings::new("wayback test\nsecond line");
        s.set("restore_command", "cp 'a' \"%p\"").unwrap();
        s.set("port", "5432").unwrap();
        assert_eq!(
            s.render(),
            "\n# wayback test second line\nrestore_command = 'cp ''a'' \"%p\"'\nport = '5432'\n"
        );
        assert_eq!(list_element(r#"/a,b "c""#), r#""/a,b ""c""""#);
    }

    #[test]
    fn append_refuses_a_symlinked_file() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let mut s = RecoverySettings::new("t");
        s.set("port", "1").unwrap();
        s.append_to(&data).unwrap();
        s.append_to(&data).unwrap();
        let conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert_eq!(conf.matches("port = '1'").count(), 2, "{conf}");
        std::fs::remove_file(data.join("postgresql.auto.conf")).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("postgresql.auto.conf")).unwrap();
        assert!(s.append_to(&data).is_err());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
    }

    proptest! {
        #[test]
        fn quote_round_trips(v in "[^\0]*") {
            let q = quote(&v).unwrap();
            prop_assert!(!q.contains('\n'));
            prop_assert_eq!(unquote(&q), Some(v));
        }
    }
}
