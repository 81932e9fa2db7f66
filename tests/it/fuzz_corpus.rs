//! The fuzz targets' corpora as a stable regression test: every seed made by wayback's own
//! encoders, every file of `fuzz/corpus/<target>/` and every crash reproducer of
//! `fuzz/regressions/<target>/` runs through the same entry point the fuzzer drives
//! (`wayback::fuzzing`), so CI, which has no cargo-fuzz, replays them all. A panic is a bug in
//! a decoder (or an invariant it broke): the test names the target and the file.
//!
//! `WAYBACK_WRITE_FUZZ_CORPUS=1 cargo test --test it fuzz_corpus` (re)writes the seeds to
//! `fuzz/corpus/<target>/seed-<n>`.

use std::path::{Path, PathBuf};

use wayback::fuzzing::{seeds, target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn run(name: &str, what: &str, input: &[u8]) {
    let t = target(name).unwrap_or_else(|| panic!("{what}: no fuzz target named {name}"));
    let r = std::panic::catch_unwind(|| (t.run)(input));
    if r.is_err() {
        panic!(
            "fuzz target {name} failed on {what} ({} bytes)",
            input.len()
        );
    }
}

/// Files of `dir/<target>/` for every target (a directory without a target is an error: its
/// inputs would silently stop running).
fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for d in rd {
        let d = d.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            target(&name).is_some(),
            "{}: no fuzz target named {name}",
            d.display()
        );
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                out.push((name.clone(), f));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn fuzz_corpus_seeds_from_real_encoders_pass_every_target() {
    let seeds = seeds();
    for t in TARGETS {
        assert!(
            seeds.iter().any(|(n, _)| *n == t.name),
            "no seed for target {}",
            t.name
        );
    }
    let write = std::env::var_os("WAYBACK_WRITE_FUZZ_CORPUS").is_some_and(|v| v == "1");
    let mut count = std::collections::HashMap::new();
    for (name, input) in &seeds {
        let i = count.entry(*name).or_insert(0);
        *i += 1;
        run(name, &format!("seed {i}"), input);
        if write {
            let dir = fuzz_dir().join("corpus").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
        }
    }
}

#[test]
fn fuzz_corpus_and_regressions_replay_without_a_panic() {
    let corpus = files_under(&fuzz_dir().join("corpus"));
    for t in TARGETS {
        assert!(
            corpus.iter().any(|(n, _)| n == t.name),
            "fuzz/corpus/{} is missing or empty",
            t.name
        );
    }
    let regressions = files_under(&fuzz_dir().join("regressions"));
    for (name, f) in corpus.iter().chain(&regressions) {
        let input = std::fs::read(f).unwrap();
        assert!(
            input.len() <= 64 << 10,
            "{}: keep corpus files small",
            f.display()
        );
        run(name, &f.display().to_string(), &input);
    }
}
