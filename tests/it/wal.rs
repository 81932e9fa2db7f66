//! The WAL archive contract (archive_command / restore_command), without a server: pushes of
//! crafted segment files, duplicates, conflicts, other clusters, fetches and the mount's /wal.

use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::common::{s, Repo};
use crate::mount::Mounted;

const SEG: usize = 16 << 20;

/// A segment-like file whose first page header carries `sysid` (XLP_LONG_HEADER set).
pub fn segment(dir: &Path, name: &str, sysid: u64, fill: u8) -> std::path::PathBuf {
    let mut b = vec![fill; SEG];
    b[..40].fill(0);
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    let p = dir.join(name);
    fs::write(&p, b).unwrap();
    p
}

#[test]
fn push_is_idempotent_refuses_conflicts_and_fetch_round_trips() {
    let r = Repo::new();
    let d = r.mkdir("pg_wal");
    let p = segment(&d, "000000010000000000000001", 7, 0);
    r.ok(&["wal-push", "--cluster", "main", s(&p)]);
    r.ok(&["wal-push", "--cluster", "main", s(&p)]); // same bytes again: success
    let mut other = fs::read(&p).unwrap();
    other[5000] = 1;
    let d2 = r.mkdir("other");
    fs::write(d2.join("000000010000000000000001"), &other).unwrap();
    let o = r.code(
        &[
            "wal-push",
            "--cluster",
            "main",
            s(&d2.join("000000010000000000000001")),
        ],
        14,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let want_old = blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string();
    let want_new = blake3::hash(&other).to_hex().to_string();
    assert!(err.contains(&want_old) && err.contains(&want_new), "{err}");
    // History, backup label and partial files are archived too.
    for name in [
        "00000002.history",
        "000000010000000000000001.00000028.backup",
        "000000010000000000000002.partial",
    ] {
        fs::write(d.join(name), format!("content of {name}")).unwrap();
        r.ok(&["wal-push", "--cluster", "main", s(&d.join(name))]);
    }
    let bad = d.join("not-a-wal-file");
    fs::write(&bad, "x").unwrap();
    let o = r.wb(&["wal-push", "--cluster", "main", s(&bad)]);
    assert!(!o.status.success() && o.status.code().unwrap() < 128);
    // Fetch: identical bytes; missing names exit 1 quickly and silently.
    let out = r.scratch("restored-seg");
    r.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000001",
        s(&out),
    ]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&p).unwrap());
    let t = Instant::now();
    let o = r.wb(&[
        "wal-fetch",
        "--cluster",
        "main",
        "00000003.history",
        s(&r.scratch("x")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    assert!(
        t.elapsed().as_millis() < 2000,
        "missing-file answer took {:?}",
        t.elapsed()
    );
    assert!(!r.scratch("x").exists());
}

#[test]
fn segments_of_another_system_are_refused() {
    let r = Repo::new();
    let d = r.mkdir("pg_wal");
    r.ok(&[
        "wal-push",
        "--cluster",
        "main",
        s(&segment(&d, "000000010000000000000001", 7, 0)),
    ]);
    let d2 = r.mkdir("pg_wal2");
    r.code(
        &[
            "wal-push",
            "--cluster",
            "main",
            s(&segment(&d2, "000000010000000000000002", 8, 0)),
        ],
        15,
    );
    r.ok(&[
        "wal-push",
        "--cluster",
        "other",
        s(&segment(&d2, "000000010000000000000002", 8, 0)),
    ]);
}

#[test]
fn status_and_mount_show_the_archive() {
    let r = Repo::new();
    let d = r.mkdir("pg_wal");
    for (i, name) in [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000005",
    ]
    .iter()
    .enumerate()
    {
        r.ok(&[
            "wal-push",
            "--cluster",
            "main",
            s(&segment(&d, name, 7, i as u8 + 1)),
        ]);
    }
    let st = r.json(&["wal", "status", "--json"]);
    assert_eq!(st[0]["newest_segment"], "000000010000000000000005");
    assert_eq!(st[0]["gaps"][0][1], "000000010000000000000003");
    assert_eq!(st[0]["gaps"][0][2], "000000010000000000000004");
    assert!(st[0]["newest_age_s"].as_f64().unwrap() < 60.0);
    let m = Mounted::new(&r, &[]);
    let names: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(m.p("wal/main"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names.len(), 3);
    assert_eq!(
        fs::read(m.p("wal/main/000000010000000000000002")).unwrap(),
        fs::read(d.join("000000010000000000000002")).unwrap()
    );
    // Not there yet: ENOENT, and not cached negatively: it appears as soon as it is pushed.
    assert!(!m.p("wal/main/000000010000000000000003").exists());
    r.ok(&[
        "wal-push",
        "--cluster",
        "main",
        s(&segment(&d, "000000010000000000000003", 7, 9)),
    ]);
    assert!(m.p("wal/main/000000010000000000000003").exists());
}

#[test]
fn check_verifies_archived_wal_and_names_damaged_segments() {
    let r = Repo::new();
    let d = r.mkdir("pg_wal");
    for (i, name) in ["000000010000000000000001", "000000010000000000000002"]
        .iter()
        .enumerate()
    {
        let p = segment(&d, name, 7, i as u8 + 1);
        r.ok(&["wal-push", "--cluster", "main", s(&p)]);
    }
    let rep = r.json(&["check", "--read-data", "--json"]);
    assert_eq!(rep["wal_files"], 2, "{rep:#}");
    assert_eq!(rep["problems"].as_array().unwrap().len(), 0, "{rep:#}");
    // Flip one byte of the first blob of every pack (blobs come first in a pack): the
    // read-data check must name the segments.
    let packs = r.packs();
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = fs::read(p).unwrap();
        b[20] ^= 0x55;
        fs::write(p, b).unwrap();
    }
    let o = r.code(&["check", "--read-data"], crate::common::exit::DAMAGED);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("WAL main/000000010000000000000001")
            || out.contains("WAL main/000000010000000000000002"),
        "{out}"
    );
    // A missing pack is found without reading data.
    for p in &packs {
        fs::remove_file(p).unwrap();
    }
    let o = r.code(&["check"], crate::common::exit::DAMAGED);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("pack holding archived WAL is missing")
            && out.contains("WAL main/000000010000000000000002"),
        "{out}"
    );
}

/// A listener of another user at `<repo>/wal-push.sock`: it records how many descriptors
/// each connection carried and answers `stored` (what a thief that drops the WAL would say).
const FAKE_AGENT: &str = r#"
import array, os, socket, sys
sock, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sock)
s.listen(1)
open(log + ".ready", "w").close()
c, _ = s.accept()
msg, anc, flags, addr = c.recvmsg(1024, socket.CMSG_SPACE(4 * array.array("i").itemsize))
fds = 0
for level, kind, data in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds += len(data) // array.array("i").itemsize
with open(log, "w") as f:
    f.write("fds=%d\n" % fds)
c.sendall(b"stored\n")
c.close()
"#;

#[test]
fn wal_push_hands_no_descriptor_to_a_listener_of_another_user() {
    use std::os::unix::fs::PermissionsExt;
    let r = Repo::new();
    // A repository that `nobody` may write (but does not own: root does).
    for p in [r.tmp(), &r.path] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let drop_box = r.mkdir("box");
    fs::set_permissions(&drop_box, fs::Permissions::from_mode(0o777)).unwrap();
    let log = drop_box.join("fake.log");
    let mut fake = crate::common::KillOnDrop(
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "/usr/bin/python3", "-c", FAKE_AGENT])
            .arg(r.path.join("wal-push.sock"))
            .arg(&log)
            .spawn()
            .unwrap(),
    );
    let ready = drop_box.join("fake.log.ready");
    assert!(
        crate::common::wait_until(std::time::Duration::from_secs(20), || ready.exists()),
        "the fake agent did not start"
    );
    let d = r.mkdir("pg_wal");
    let p = segment(&d, "000000010000000000000001", 7, 3);
    let o = r.ok(&["wal-push", "--cluster", "main", s(&p)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("neither the repository's owner"), "{err}");
    // The fake agent got a connection (it may see the client hang up) but no descriptor.
    let _ = fake.0.wait();
    let got = fs::read_to_string(&log).unwrap_or_else(|_| "fds=0\n".into());
    assert_eq!(
        got, "fds=0\n",
        "the listener of `nobody` received the WAL file"
    );
    // The push was written directly and is really archived.
    let back = r.scratch("back");
    r.ok(&[
        "wal-fetch",
        "--cluster",
        "main",
        "000000010000000000000001",
        s(&back),
    ]);
    assert!(fs::read(&back).unwrap() == fs::read(&p).unwrap());
}
