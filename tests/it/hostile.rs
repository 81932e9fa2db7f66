//! Hostile input: names, tar streams, trees and key files crafted to make wayback panic, hang,
//! write outside its target or hand out wrong bytes. Each must end in a clear error instead.

use std::fs;

use crate::common::{assert_code, describe, exit, s, Repo};

/// A 24-byte name whose multibyte character straddles the 8-byte field boundary of a segment
/// name: it used to panic `wal::names::parse` (string slicing before the ASCII check).
const MULTIBYTE_24: &str = "0000000\u{e9}000000000000000";

fn assert_no_panic(o: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && o.status.code().is_some_and(|c| c < 100),
        "{what} panicked or died: {}",
        describe(o)
    );
}

#[test]
fn multibyte_wal_names_are_refused_everywhere_without_a_panic() {
    assert_eq!(MULTIBYTE_24.len(), 24);
    let r = Repo::new();
    // wal-push's argv.
    let d = r.mkdir("pg_wal");
    let p = d.join(MULTIBYTE_24);
    fs::write(&p, b"not wal").unwrap();
    let o = r.wb(&["wal-push", "--cluster", "main", s(&p)]);
    assert_no_panic(&o, "wal-push");
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not a PostgreSQL WAL"),
        "{}",
        describe(&o)
    );
    // wal-fetch's argv.
    let o = r.wb(&[
        "wal-fetch",
        "--cluster",
        "main",
        MULTIBYTE_24,
        s(&r.scratch("out")),
    ]);
    assert_no_panic(&o, "wal-fetch");
    assert_code(&o, exit::ERROR, "wal-fetch of a non-WAL name");
    // A file planted in the archive directory reaches `wal::list` (check, status).
    let seg = d.join("000000010000000000000001");
    fs::write(&seg, vec![0u8; 1 << 20]).unwrap();
    r.ok(&["wal-push", "--cluster", "main", s(&seg)]);
    fs::write(r.path.join("wal/main").join(MULTIBYTE_24), b"junk").unwrap();
    for args in [&["wal", "status"][..], &["check"][..]] {
        let o = r.wb(args);
        assert_no_panic(&o, &args.join(" "));
        assert_code(&o, exit::OK, &args.join(" "));
    }
}
