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
//! keep = { last = 4, daily = 7, weekly = 4, monthly = 12 }   # forget after each run
//!
//! prune = "0 4 * * *"                      # top level: when the agent prunes (UTC cron)
//! prune_grace = "24h"                      # optional; how long unused packs stay marked
//! # or: prune_every = "6h"
//! on_failure = "mail -s \"wayback: $WAYBACK_SOURCE failed\" root"   # optional, also per source
//! metrics = "127.0.0.1:9469"               # optional Prometheus endpoint (GET /metrics)
//! check = { cron = "0 3 * * *", read_data_subset = "1/30" }   # or every = "1d"; or "5%"
//! copy = { to = "/mnt/offsite", cron = "30 2 * * *", password_file = "/etc/wayback/offsite" }
//!                                          # optional: off-site copy (`wayback copy --wal`)
//! drill_scratch = "/var/tmp/wayback"       # optional; where drills restore (default: cache)
//! pg_bin = "/usr/lib/postgresql/15/bin"    # optional; PostgreSQL for base-backup drills
//! wal_late = "15m"                         # optional; a cluster whose newest WAL is older is LATE
//!
//! # per source: a restore drill on a schedule (cron or interval), for a base backup with a
//! # query whose output must match:
//! # drill = "0 5 * * 0"
//! # drill_query = "SELECT count(*) FROM orders"
//! # drill_expect = "42"                    # optional
//! # drill_database = "app"                 # optional; default postgres
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::cron::Cron;

/// Default of `wal_late`: the requirements' RPO for critical data.
pub const DEFAULT_WAL_LATE: Duration = Duration::from_secs(15 * 60);

/// The whole file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Repository: a directory or an `s3://bucket/prefix?endpoint=...` location.
    pub repo: PathBuf,
    /// Passphrase file.
    pub password_file: Option<PathBuf>,
    /// Control socket path.
    pub socket: Option<PathBuf>,
    /// When to prune (five-field cron, UTC); none: the agent never prunes.
    pub prune: Option<String>,
    /// Or: prune at this interval (humantime), first one interval after start.
    pub prune_every: Option<String>,
    /// Grace period of the agent's prunes (humantime; default 24h).
    pub prune_grace: Option<String>,
    /// Shell command run when a job of a source without its own `on_failure` fails.
    pub on_failure: Option<String>,
    /// Address of the Prometheus endpoint (`127.0.0.1:9469`); none: no metrics.
    pub metrics: Option<String>,
    /// Scheduled verification of the repository.
    pub check: Option<CheckConfig>,
    /// Scheduled off-site copy into a second repository.
    pub copy: Option<CopyConfig>,
    /// Parent directory of drill scratch directories (default: the repository's cache).
    pub drill_scratch: Option<PathBuf>,
    /// PostgreSQL binaries for base-backup drills (default /usr/lib/postgresql/15/bin).
    pub pg_bin: Option<PathBuf>,
    /// A WAL cluster whose newest archived segment is older than this (humantime) is LATE in
    /// `status` (default 15m, the requirements' RPO; `"off"`: never). Why a default: a dead
    /// archiver is the one failure PostgreSQL itself only logs, and the live RPO is the age.
    pub wal_late: Option<String>,
    /// Sources.
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

/// `check = { cron = "0 3 * * *", read_data_subset = "1/30" }`: the agent checks the
/// repository's structure on this schedule and, with `read_data_subset`, reads and verifies
/// the next part of the packs each time, so that every byte is re-read once per cycle.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Five-field cron expression (UTC).
    pub cron: Option<String>,
    /// Or an interval (humantime), first run one interval after start.
    pub every: Option<String>,
    /// `"1/30"` (a thirtieth of the packs per run) or `"5%"`; none: structure only.
    pub read_data_subset: Option<String>,
}

/// A `cron` or `every` setting as a schedule (cron wins; neither, or one that does not parse:
/// passive). Validation at load has already refused text that does not parse.
fn schedule_of(cron: Option<&str>, every: Option<&str>) -> Schedule {
    if let Some(c) = cron.and_then(|c| Cron::parse(c).ok()) {
        Schedule::Cron(c)
    } else if let Some(d) = every.and_then(|e| parse_interval(e).ok()) {
        Schedule::Every(d)
    } else {
        Schedule::Passive
    }
}

/// `copy = { to = "/mnt/offsite", cron = "30 2 * * *", password_file = "/etc/wayback/offsite" }`:
/// the agent runs `wayback copy --to ... --wal` on this schedule (the off-site copy of 3-2-1),
/// sending what the second repository lacks.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Destination repository.
    pub to: PathBuf,
    /// Five-field cron expression (UTC).
    pub cron: Option<String>,
    /// Or an interval (humantime), first run one interval after start.
    pub every: Option<String>,
    /// File whose first line is the destination's passphrase (else $WAYBACK_TO_PASSWORD as
    /// the agent was started with).
    pub password_file: Option<PathBuf>,
    /// Only these sources (default: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Also copy the WAL archive (default true).
    #[serde(default = "default_true")]
    pub wal: bool,
}

fn default_true() -> bool {
    true
}

impl CopyConfig {
    /// When to copy.
    pub fn schedule(&self) -> Schedule {
        schedule_of(self.cron.as_deref(), self.every.as_deref())
    }
}

impl CheckConfig {
    /// When to check.
    pub fn schedule(&self) -> Schedule {
        schedule_of(self.cron.as_deref(), self.every.as_deref())
    }

    /// Number of parts the packs are split into (`m` of `n/m`), if data is read.
    pub fn parts(&self) -> Option<u32> {
        self.read_data_subset
            .as_deref()
            .and_then(|s| parse_fraction(s).ok())
    }
}

/// `"1/30"` -> 30; `"5%"` -> 20 (rounded up, so each run reads at least the share asked for).
pub fn parse_fraction(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let bad =
        || format!("read_data_subset = \"{s}\": give 1/M (e.g. 1/30) or a percentage (e.g. 5%)");
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(bad());
        }
        return Ok((100.0 / p).ceil() as u32);
    }
    match s.split_once('/') {
        Some(("1", m)) => match m.trim().parse::<u32>() {
            Ok(m) if m >= 1 => Ok(m),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// A schedule written as a cron expression or, failing that, an interval (`drill = "..."`).
pub fn cron_or_interval(s: &str) -> Result<Schedule, String> {
    match Cron::parse(s) {
        Ok(c) => Ok(Schedule::Cron(c)),
        Err(cron_err) => parse_interval(s).map(Schedule::Every).map_err(|_| {
            format!("\"{s}\" is neither a cron expression ({cron_err}) nor an interval like 1d")
        }),
    }
}

/// Retention of one source (`keep = { daily = 7, ... }`): what `wayback forget --keep-*` takes,
/// applied by the agent after each successful run of the source.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    /// `--keep-last`.
    #[serde(default)]
    pub last: u32,
    /// `--keep-hourly`.
    #[serde(default)]
    pub hourly: u32,
    /// `--keep-daily`.
    #[serde(default)]
    pub daily: u32,
    /// `--keep-weekly`.
    #[serde(default)]
    pub weekly: u32,
    /// `--keep-monthly`.
    #[serde(default)]
    pub monthly: u32,
    /// `--keep-yearly`.
    #[serde(default)]
    pub yearly: u32,
    /// `--keep-within` (humantime duration).
    pub within: Option<String>,
    /// `--keep-tag` (repeatable).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Keep {
    /// The forget policy; refuses one that keeps nothing or a bad duration.
    pub fn policy(&self) -> Result<crate::maint::forget::Policy, String> {
        let within_ms = match &self.within {
            Some(w) => Some(
                humantime::parse_duration(w)
                    .map_err(|e| format!("keep.within = \"{w}\": {e}"))?
                    .as_millis()
                    .min(i64::MAX as u128) as i64,
            ),
            None => None,
        };
        let p = crate::maint::forget::Policy {
            last: self.last,
            hourly: self.hourly,
            daily: self.daily,
            weekly: self.weekly,
            monthly: self.monthly,
            yearly: self.yearly,
            within_ms,
            tags: self.tags.clone(),
        };
        if p.keeps_nothing() {
            return Err("keep = { ... } keeps nothing: give last, hourly, daily, weekly, monthly, yearly, within or tags".into());
        }
        Ok(p)
    }
}

impl Config {
    /// The agent's next prune after `now`, if it prunes.
    pub fn next_prune(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if let Some(c) = self.prune.as_deref().and_then(|c| Cron::parse(c).ok()) {
            return c.next_after(now);
        }
        let d = parse_interval(self.prune_every.as_deref()?).ok()?;
        now.checked_add_signed(chrono::Duration::from_std(d).ok()?)
    }

    /// Age of the newest archived WAL beyond which a cluster is LATE; none when `"off"`.
    pub fn wal_late(&self) -> Option<Duration> {
        match self.wal_late.as_deref() {
            Some("off") => None,
            Some(w) => humantime::parse_duration(w).ok(),
            None => Some(DEFAULT_WAL_LATE),
        }
    }

    /// The grace period of the agent's prunes.
    pub fn prune_grace(&self) -> Duration {
        self.prune_grace
            .as_deref()
            .and_then(|g| humantime::parse_duration(g).ok())
            .unwrap_or(Duration::from_secs(24 * 3600))
    }
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
    /// Retention applied after each successful run.
    pub keep: Option<Keep>,
    /// Shell command run when a job of this source fails (see `agent::hooks`).
    pub on_failure: Option<String>,
    /// Restore drill schedule (cron expression or interval); none: no drills.
    pub drill: Option<String>,
    /// Query a base-backup drill runs once PostgreSQL recovered (default `SELECT 1`).
    pub drill_query: Option<String>,
    /// Output `drill_query` must give.
    pub drill_expect: Option<String>,
    /// Database of `drill_query` (default postgres).
    pub drill_database: Option<String>,
    /// Drill a random complete snapshot instead of the newest.
    #[serde(default)]
    pub drill_random: bool,
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
        schedule_of(self.cron.as_deref(), self.every.as_deref())
    }
}

/// The local directory the agent keeps for its repository (sockets): the repository itself
/// when local, its cache directory for S3 ([`crate::repo::Location::home`]). `repo` was
/// checked by [`parse`]; should the cache directory be unusable the path as written is used,
/// and opening the repository reports why.
pub fn repo_home(cfg: &Config) -> PathBuf {
    crate::repo::Location::parse(cfg.repo.as_os_str())
        .and_then(|l| l.home())
        .unwrap_or_else(|_| cfg.repo.clone())
}

/// Parses and validates; errors say `file:line: what`.
pub fn load(path: &std::path::Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}:{e}", path.display()))
}

/// Validates the schedule of an agent-wide task (`check`, `copy`): exactly one of a cron
/// expression or an interval.
fn validate_when(what: &str, cron: Option<&str>, every: Option<&str>) -> Result<(), String> {
    match (cron, every) {
        (Some(_), Some(_)) => Err(format!("0: {what}: give either cron or every, not both")),
        (None, None) => Err(format!("0: {what} needs cron = \"...\" or every = \"...\"")),
        (Some(cr), None) => Cron::parse(cr)
            .map(|_| ())
            .map_err(|m| format!("0: {what}.cron = \"{cr}\": {m}")),
        (None, Some(e)) => parse_interval(e)
            .map(|_| ())
            .map_err(|m| format!("0: {what}.every: {m}")),
    }
}

/// Parses and validates text; errors are `line: what`.
pub fn parse(text: &str) -> Result<Config, String> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        format!("{line}: {}", e.message())
    })?;
    if let Err(e) = crate::repo::Location::parse(cfg.repo.as_os_str()) {
        return Err(format!("0: repo: {e}"));
    }
    if let Some(c) = &cfg.prune {
        if let Err(m) = Cron::parse(c) {
            return Err(format!("0: prune = \"{c}\": {m}"));
        }
    }
    if let Some(e) = &cfg.prune_every {
        if let Err(m) = parse_interval(e) {
            return Err(format!("0: prune_every: {m}"));
        }
        if cfg.prune.is_some() {
            return Err("0: give either prune (cron) or prune_every, not both".into());
        }
    }
    if let Some(g) = &cfg.prune_grace {
        if let Err(e) = humantime::parse_duration(g) {
            return Err(format!("0: prune_grace = \"{g}\": {e}"));
        }
    }
    if let Some(w) = cfg.wal_late.as_deref().filter(|w| *w != "off") {
        if let Err(e) = humantime::parse_duration(w) {
            return Err(format!("0: wal_late = \"{w}\": {e} (or \"off\")"));
        }
    }
    if let Some(m) = &cfg.metrics {
        if m.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "0: metrics = \"{m}\": not an address like 127.0.0.1:9469"
            ));
        }
    }
    if let Some(c) = &cfg.copy {
        validate_when("copy", c.cron.as_deref(), c.every.as_deref())?;
        if std::path::absolute(&c.to).ok() == std::path::absolute(&cfg.repo).ok() {
            return Err("0: copy.to is the agent's own repository; give a second one".into());
        }
    }
    if let Some(c) = &cfg.check {
        validate_when("check", c.cron.as_deref(), c.every.as_deref())?;
        if let Some(s) = &c.read_data_subset {
            parse_fraction(s).map_err(|m| format!("0: check.{m}"))?;
        }
    }
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
        if let Some(k) = &s.keep {
            if s.kind == "postgres-wal" {
                return err(
                    "keep: WAL follows its base backups; put keep on the basebackup source".into(),
                );
            }
            if let Err(m) = k.policy() {
                return err(m);
            }
        }
        if let Some(d) = &s.drill {
            if s.kind == "postgres-wal" {
                return err("drill: WAL is drilled with its base backups; put drill on the basebackup source".into());
            }
            if let Err(m) = cron_or_interval(d) {
                return err(format!("drill: {m}"));
            }
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
    fn retention_and_prune_settings_are_validated() {
        let base = "repo = \"/r\"\n";
        let src = "[[source]]\nname = \"x\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"f\"\nevery = \"1h\"\n";
        let ok = format!("{base}prune = \"0 4 * * *\"\nprune_grace = \"12h\"\n{src}keep = {{ daily = 7, within = \"2d\" }}\n");
        let c = parse(&ok).unwrap();
        assert_eq!(c.prune_grace(), Duration::from_secs(12 * 3600));
        assert_eq!(
            c.sources[0].keep.as_ref().unwrap().policy().unwrap().daily,
            7
        );
        let nothing = format!("{base}{src}keep = {{ daily = 0 }}\n");
        assert!(parse(&nothing).unwrap_err().contains("keeps nothing"));
        let bad_within = format!("{base}{src}keep = {{ within = \"soon\" }}\n");
        assert!(parse(&bad_within).unwrap_err().contains("keep.within"));
        let unknown = format!("{base}{src}keep = {{ daly = 7 }}\n");
        assert!(parse(&unknown).is_err());
        let both = format!("{base}prune = \"0 4 * * *\"\nprune_every = \"1h\"\n{src}");
        assert!(parse(&both).unwrap_err().contains("not both"));
        let bad_cron = format!("{base}prune = \"every night\"\n{src}");
        assert!(parse(&bad_cron).unwrap_err().contains("prune"));
        let wal = format!("{base}[[source]]\nname = \"w\"\ntype = \"postgres-wal\"\ncluster = \"c\"\nkeep = {{ last = 1 }}\n");
        assert!(parse(&wal).unwrap_err().contains("basebackup"));
    }

    #[test]
    fn copy_settings_are_validated() {
        let base = "repo = \"/r\"\n";
        let c = parse(&format!(
            "{base}copy = {{ to = \"/off\", every = \"6h\" }}\n"
        ))
        .unwrap();
        let cc = c.copy.unwrap();
        assert!(cc.wal && cc.sources.is_empty());
        assert!(matches!(cc.schedule(), Schedule::Every(_)));
        for (bad, why) in [
            ("copy = { to = \"/off\" }", "copy needs cron"),
            (
                "copy = { to = \"/off\", cron = \"0 3 * * *\", every = \"1h\" }",
                "either cron or every",
            ),
            ("copy = { to = \"/off\", cron = \"nope\" }", "copy.cron"),
            ("copy = { to = \"/r\", every = \"1h\" }", "own repository"),
            ("copy = { to = \"/off\", every = \"1h\", typo = 1 }", "typo"),
        ] {
            let e = parse(&format!("{base}{bad}\n")).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn drill_and_check_settings_are_validated() {
        let base = "repo = \"/r\"\n";
        let src = "[[source]]\nname = \"x\"\ntype = \"command\"\ncommand = \"true\"\nfile = \"f\"\nevery = \"1h\"\n";
        let ok = format!("{base}check = {{ cron = \"0 3 * * *\", read_data_subset = \"5%\" }}\n{src}drill = \"0 5 * * 0\"\n");
        let c = parse(&ok).unwrap();
        assert_eq!(c.check.as_ref().unwrap().parts(), Some(20));
        assert!(matches!(
            cron_or_interval(c.sources[0].drill.as_deref().unwrap()),
            Ok(Schedule::Cron(_))
        ));
        assert!(matches!(cron_or_interval("30s"), Ok(Schedule::Every(_))));
        assert_eq!(parse_fraction("1/30"), Ok(30));
        assert_eq!(parse_fraction("100%"), Ok(1));
        assert_eq!(parse_fraction("3%"), Ok(34));
        for bad in ["0%", "150%", "2/30", "1/0", "half"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
        let no_when = format!("{base}check = {{ read_data_subset = \"1/30\" }}\n{src}");
        assert!(parse(&no_when).unwrap_err().contains("check needs"));
        let bad_drill = format!("{base}{src}drill = \"sometimes\"\n");
        assert!(parse(&bad_drill).unwrap_err().contains("drill"));
        let bad_subset =
            format!("{base}check = {{ every = \"1d\", read_data_subset = \"2/3\" }}\n{src}");
        assert!(parse(&bad_subset).unwrap_err().contains("read_data_subset"));
    }

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
