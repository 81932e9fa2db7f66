//! `wayback prune`: parse, run `maint::prune`, print.

use anyhow::{bail, Context};

use crate::cli::common::{progress_bar, RepoArgs};
use crate::maint::prune::{prune, PruneOptions, PruneReport};
use crate::repo::Access;

/// Arguments of `prune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Unused bytes that may stay, as a share of the live bytes (e.g. 5%, 0.05): partly used
    /// packs are repacked, most unused first, until no more is left. 0% repacks every one.
    #[arg(long, default_value = "5%")]
    pub max_unused: String,
    /// Repack at most this many bytes of packs per run (e.g. 2G, 500M).
    #[arg(long)]
    pub max_repack_size: Option<String>,
    /// How long an unused pack stays marked before a later prune may delete it (e.g. 24h,
    /// 30m). 0 deletes at once: safe only while nothing else writes (no wal-push, no agent).
    #[arg(long, default_value = "24h")]
    pub grace: String,
    /// JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Parses `5%` or `0.05` into a fraction.
pub fn parse_fraction(s: &str) -> anyhow::Result<f64> {
    let f = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .with_context(|| format!("not a fraction or percentage: {s:?}"))?;
    if !(0.0..=1.0).contains(&f) {
        bail!("--max-unused must be between 0% and 100%, got {s}");
    }
    Ok(f)
}

/// Parses a size like `500M`, `2G`, `1024` (bytes; K/M/G/T are powers of 1024).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("unknown size unit in {s:?} (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .with_context(|| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))
}

/// Runs prune; exit 12 when a damaged pack kept prune from finishing a repack.
pub fn run(ra: &RepoArgs, a: Args) -> anyhow::Result<i32> {
    let opts = PruneOptions {
        dry_run: a.dry_run,
        max_unused: parse_fraction(&a.max_unused)?,
        max_repack_bytes: a.max_repack_size.as_deref().map(parse_size).transpose()?,
        grace: humantime::parse_duration(&a.grace)
            .with_context(|| format!("--grace {:?}: not a duration like 24h or 30m", a.grace))?,
    };
    let repo = match ra.open(Access::Write) {
        Err(e) if matches!(e.downcast_ref(), Some(crate::error::Error::Locked(_))) => {
            return Err(e.context(
                "prune needs the writer lock; if the agent holds it, stop the agent for the \
                 prune (or let the agent's own schedule run it)",
            ))
        }
        r => r?,
    };
    if opts.grace.is_zero() && !opts.dry_run {
        eprintln!(
            "wayback: --grace 0 deletes unused packs at once: safe only while nothing else \
             writes (no wal-push, no other writer)"
        );
    }
    let pb = progress_bar(None, "{spinner} {msg}");
    let rep = prune(&repo, &opts, &mut |m| pb.set_message(m.to_string()))?;
    pb.finish_and_clear();
    if !opts.dry_run {
        crate::audit::note(&repo, "prune", &rep.summary());
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print_report(&rep)?;
    }
    Ok(if rep.packs_damaged.is_empty() {
        0
    } else {
        crate::cli::EXIT_DAMAGED
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// Prints a prune report for people (also after `forget --prune`).
pub fn print_report(r: &PruneReport) -> std::io::Result<()> {
    let verb = if r.dry_run { "would be" } else { "" };
    outln!(
        "{} live blobs; packs: {} ({}) before, {} ({}) after{}",
        r.live_blobs,
        r.packs_before,
        mib(r.bytes_before),
        r.packs_after,
        mib(r.bytes_after),
        if r.dry_run { " (projected)" } else { "" }
    );
    outln!(
        "{} packs {verb} deleted ({}), {} repacked into {} new, {} newly marked unused, {} waiting for the grace period, {} unmarked (needed again)",
        r.packs_deleted,
        mib(r.bytes_deleted),
        r.packs_repacked,
        r.packs_written,
        r.packs_marked,
        r.packs_waiting,
        r.packs_unmarked
    );
    for p in &r.packs_damaged {
        outln!("error: pack {p} not repacked: a live blob failed to verify (run `wayback check --read-data`)");
    }
    outln!("took {:.2} s", r.duration_ms as f64 / 1000.0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_fractions_parse_and_overflow_is_refused() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("5X").is_err());
        assert!((parse_fraction("5%").unwrap() - 0.05).abs() < 1e-12);
        assert!((parse_fraction("0.2").unwrap() - 0.2).abs() < 1e-12);
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("abc").is_err());
    }
}
