//! The agent's TOML configuration, validated with line-accurate errors.
//!
//! ```toml
//! repo = "/srv/wayback"
//! password_file = "/etc/wayback/pass"
//! socket = "/run/wayback/agent.sock"      # optional; default <repo>/agent.sock
//!
//! [[source]]
//! name = "etc"
//! type = "paths"                           # paths | command | basebackup | postgres-wal
//! paths = ["/etc"]
//! exclude = ["*.swp"]
//! every = "1h"                             # or: cron = "0 2 * * *" (UTC)
//!
//! [[source]]
//! name = "app-db"
//! type = "command"
//! command = "pg_dump -Fc -Z0 app"
//! file = "app.dump"
//! every = "15m"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::cron::Cron;

/// The whole file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repository directory.
    pub repo: PathBuf,
    /// Passphrase file.
    pub password_file: Option<PathBuf>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// Sources.
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

/// One source.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Name under /at/<T>/.
    pub name: String,
    /// `paths`, `command`, `basebackup` or `postgres-wal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Directories (paths).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Exclude globs (paths).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Shell command (command, basebackup).
    pub command: Option<String>,
    /// File name of the stored stream (command).
    pub file: Option<String>,
    /// WAL archive name (basebackup, postgres-wal).
    pub cluster: Option<String>,
    /// Interval like `30s`, `15m`, `1h`, `1d`.
    pub every: Option<String>,
    /// Five-field cron expression (UTC).
    pub cron: Option<String>,
    /// Tags for every snapshot.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// When a source runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every interval, first run at start.
    Every(Duration),
    /// On cron matches.
    Cron(Cron),
    /// Never by itself (postgres-wal: segments arrive through wal-push).
    Passive,
}

/// Longest `every`: a century. Anything longer is a typo, and adding it to a date would
/// overflow the calendar arithmetic (`chrono` panics on that).
pub const MAX_INTERVAL: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses an interval like `30s`, `15m`, `2h`, `1d` or `1h 30m` (humantime syntax), between
/// one second and [`MAX_INTERVAL`]; the error says why not.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("\"{s}\" is not an interval like 30s, 15m, 1h, 1d: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("\"{s}\" is shorter than one second"));
    }
    if d > MAX_INTERVAL {
        return Err(format!("\"{s}\" is longer than 100 years"));
    }
    Ok(d)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line of the `[[source]]` table whose name is `name` (for error messages).
fn source_line(text: &str, name: &str) -> usize {
    let needle_a = format!("name = \"{name}\"");
    let needle_b = format!("name=\"{name}\"");
    text.find(&needle_a)
        .or_else(|| text.find(&needle_b))
        .map(|o| line_of(text, o))
        .unwrap_or(0)
}

impl Source {
    /// The source's schedule.
    pub fn schedule(&self) -> Schedule {
        if let Some(c) = self.cron.as_deref().and_then(|c| Cron::parse(c).ok()) {
            Schedule::Cron(c)
        } else if let Some(d) = self.every.as_deref().and_then(|e| parse_interval(e).ok()) {
            Schedule::Every(d)
        } else {
            Schedule::Passive
        }
    }
}

/// Parses and validates; errors say `file:line: what`.
pub fn load(path: &std::path::Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// Parses and validates text; errors are `line: what`.
pub fn parse(text: &str) -> Result<Config, String> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        format!("{line}: {}", e.message())
    })?;
    let mut seen = std::collections::HashSet::new();
    for s in &cfg.sources {
        let at = source_line(text, &s.name);
        let err = |m: String| Err(format!("{at}: source '{}': {m}", s.name));
        if s.name.is_empty() || s.name.contains('/') || s.name.starts_with('.') {
            return err("name must be non-empty, without '/', not starting with '.'".into());
        }
        if !seen.insert(s.name.clone()) {
            return err("duplicate source name".into());
        }
        match s.kind.as_str() {
            "paths" if s.paths.is_empty() => return err("type 'paths' needs paths = [...]".into()),
            "command" if s.command.is_none() || s.file.is_none() => {
                return err("type 'command' needs command = \"...\" and file = \"name\"".into())
            }
            "basebackup" if s.command.is_none() || s.cluster.is_none() => {
                return err("type 'basebackup' needs command = \"pg_basebackup -D - -Ft -X none -c fast\" and cluster = \"...\"".into())
            }
            "paths" | "command" | "basebackup" | "postgres-wal" => {}
            other => return err(format!("unknown type '{other}' (paths, command, basebackup, postgres-wal)")),
        }
        if let Some(e) = &s.every {
            if let Err(m) = parse_interval(e) {
                return err(format!("every: {m}"));
            }
        }
        if let Some(c) = &s.cron {
            if let Err(m) = Cron::parse(c) {
                return err(format!("cron = \"{c}\": {m}"));
            }
        }
        if s.every.is_some() && s.cron.is_some() {
            return err("give either every or cron, not both".into());
        }
        if s.kind != "postgres-wal" && s.every.is_none() && s.cron.is_none() {
            return err("needs a schedule: every = \"1h\" or cron = \"0 2 * * *\"".into());
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_configs() {
        let ok = "repo = \"/r\"\n[[source]]\nname = \"etc\"\ntype = \"paths\"\npaths = [\"/etc\"]\nevery = \"1h\"\n";
        assert_eq!(parse(ok).unwrap().sources.len(), 1);
        let bad_type =
            "repo = \"/r\"\n\n[[source]]\nname = \"x\"\ntype = \"tape\"\nevery = \"1h\"\n";
        assert!(
            parse(bad_type)
                .unwrap_err()
                .starts_with("4: source 'x': unknown type"),
            "{}",
            parse(bad_type).unwrap_err()
        );
        let bad_syntax = "repo = \"/r\"\n[[source]]\nname = \"x\"\ntype = paths\n";
        assert!(
            parse(bad_syntax).unwrap_err().starts_with("4:"),
            "{}",
            parse(bad_syntax).unwrap_err()
        );
        let unknown = "repo = \"/r\"\nrepoo = 1\n";
        assert!(
            parse(unknown).unwrap_err().starts_with("2:"),
            "{}",
            parse(unknown).unwrap_err()
        );
        let bad_every = "repo = \"/r\"\n[[source]]\nname = \"x\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"f\"\nevery = \"soon\"\n";
        assert!(parse(bad_every).unwrap_err().contains("every"));
        assert_eq!(parse_interval("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_interval("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("1h 30m"), Ok(Duration::from_secs(5400)));
        // Values whose seconds overflowed the old multiplication, or the calendar.
        for huge in ["213503982334602d", "99999999999999999999s", "1000y"] {
            assert!(parse_interval(huge).is_err(), "{huge}");
        }
        assert!(parse_interval("500ms").is_err());
        assert!(parse_interval("0s").is_err());
    }
}
