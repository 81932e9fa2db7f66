//! Shared fixtures for the integration tests: a throw-away repository, running the `wayback`
//! binary, assertions that show the process output on failure, tree generators, and a
//! tree comparison that checks content *and* metadata.
//!
//! Everything here is per-test (own temporary directory, own environment), so tests run in
//! parallel without sharing state.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wayback");
/// Passphrase every fixture repository is created with.
pub const PASSWORD: &str = "correct horse battery staple";
/// One MiB.
pub const MIB: usize = 1 << 20;

/// Exit codes documented in `src/cli/mod.rs`.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Other error.
    pub const ERROR: i32 = 1;
    /// Usage error.
    pub const USAGE: i32 = 2;
    /// Snapshot written but incomplete.
    pub const INCOMPLETE: i32 = 3;
    /// Wrong passphrase.
    pub const WRONG_PASSWORD: i32 = 10;
    /// Writer lock held elsewhere.
    pub const LOCKED: i32 = 11;
    /// Damaged data.
    pub const DAMAGED: i32 = 12;
    /// Not found.
    pub const NOT_FOUND: i32 = 13;
}

/// A fresh, initialised repository in its own temporary directory. The directory also serves as
/// scratch space for source trees and restore targets (see [`Repo::scratch`]).
pub struct Repo {
    tmp: tempfile::TempDir,
    /// Repository root (`<tmp>/repo`).
    pub path: PathBuf,
    /// Passphrase used by [`Repo::wb`].
    pub password: String,
    /// `WAYBACK_REPO` when not [`Repo::path`] (an `s3://` location, see `s3.rs`).
    pub location: Option<String>,
    /// Environment every command gets (the S3 keys of an `s3://` repository).
    pub env: Vec<(String, String)>,
}

impl Repo {
    /// Creates a temporary directory and runs `wayback init` in `<tmp>/repo`.
    pub fn new() -> Repo {
        Repo::with_password(PASSWORD)
    }

    /// [`Repo::new`] protected by another passphrase (a second repository with its own key).
    pub fn with_password(password: &str) -> Repo {
        let tmp = tempfile::Builder::new()
            .prefix("wayback-it-")
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().join("repo");
        let r = Repo {
            tmp,
            path,
            password: password.to_string(),
            location: None,
            env: Vec::new(),
        };
        r.ok(&["init"]);
        r
    }

    /// Runs `wayback init` at `location` (e.g. `s3://...`) with `env` given to every command;
    /// scratch space is a fresh temporary directory ([`Repo::path`] is unused there).
    pub fn at(location: String, env: Vec<(String, String)>) -> Repo {
        let tmp = tempfile::Builder::new()
            .prefix("wayback-it-")
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().join("repo");
        let r = Repo {
            tmp,
            path,
            password: PASSWORD.to_string(),
            location: Some(location),
            env,
        };
        r.ok(&["init"]);
        r
    }

    /// A copy of this repository (`cp -a`) in a temporary directory of its own, for trials
    /// that damage a repository built once. Nothing may have the index open while it is copied.
    pub fn copy(&self) -> Repo {
        let tmp = tempfile::Builder::new()
            .prefix("wayback-it-copy-")
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().join("repo");
        let o = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(&path)
            .output()
            .expect("cp");
        assert!(o.status.success(), "cp -a: {}", describe(&o));
        Repo {
            tmp,
            path,
            password: self.password.clone(),
            location: None,
            env: Vec::new(),
        }
    }

    /// The temporary directory holding the repository.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// A path `<tmp>/<name>` (not created).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A fresh directory `<tmp>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.scratch(name);
        fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// A `Command` for the binary with this repository's environment and the given passphrase.
    pub fn cmd_with_password(&self, password: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        let repo = match &self.location {
            Some(l) => std::ffi::OsString::from(l),
            None => self.path.clone().into_os_string(),
        };
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.args(args)
            .env("WAYBACK_REPO", repo)
            .env("WAYBACK_PASSWORD", password)
            .env("WAYBACK_INSECURE_FAST_KDF", "1")
            .env("TMPDIR", self.tmp.path())
            .env("WAYBACK_CACHE_DIR", self.tmp.path().join("cache"))
            .env_remove("WAYBACK_PASSWORD_FILE")
            .env_remove("WAYBACK_NEW_PASSWORD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// A `Command` for the binary with this repository's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with_password(&self.password, args)
    }

    /// Runs the binary and returns its output (whatever the exit status).
    pub fn wb(&self, args: &[&str]) -> Output {
        run(self.cmd(args))
    }

    /// Runs the binary with another passphrase.
    pub fn wb_pass(&self, password: &str, args: &[&str]) -> Output {
        run(self.cmd_with_password(password, args))
    }

    /// Runs the binary, asserting exit 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.wb(args);
        assert_code(&o, exit::OK, &format!("wayback {}", args.join(" ")));
        o
    }

    /// Runs the binary, asserting the given exit code.
    pub fn code(&self, args: &[&str], code: i32) -> Output {
        let o = self.wb(args);
        assert_code(&o, code, &format!("wayback {}", args.join(" ")));
        o
    }

    /// Runs the binary, asserting exit 0, and parses stdout as one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let o = self.ok(args);
        parse_json(&o)
    }

    /// `backup ARGS --json`, asserting exit 0 and a complete snapshot; returns the snapshot JSON.
    pub fn backup(&self, args: &[&str]) -> Value {
        let mut a = vec!["backup"];
        a.extend_from_slice(args);
        a.push("--json");
        let v = self.json(&a);
        assert_eq!(
            v["complete"],
            Value::Bool(true),
            "snapshot incomplete: {v:#}"
        );
        v
    }

    /// `backup DIR --source SOURCE --json`.
    pub fn backup_dir(&self, dir: &Path, source: &str) -> Value {
        self.backup(&[s(dir), "--source", source])
    }

    /// `snapshots --json` as a vector.
    pub fn snapshots(&self) -> Vec<Value> {
        match self.json(&["snapshots", "--json"]) {
            Value::Array(a) => a,
            other => panic!("snapshots --json is not an array: {other:#}"),
        }
    }

    /// `restore SPEC --target DIR` (plus extra args), asserting exit 0.
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> Output {
        let mut a = vec!["restore", spec, "--target", s(target)];
        a.extend_from_slice(extra);
        self.ok(&a)
    }

    /// `cat SPEC` stdout, asserting exit 0.
    pub fn cat(&self, spec: &str, extra: &[&str]) -> Vec<u8> {
        let mut a = vec!["cat", spec];
        a.extend_from_slice(extra);
        self.ok(&a).stdout
    }

    /// All pack files currently in the repository.
    /// The data pack a backup wrote since `before`. A backup writes its trees into a pack of
    /// their own beside its data; the tests' data dwarfs their trees, so size tells them apart.
    #[track_caller]
    pub fn new_data_pack(&self, before: &BTreeSet<PathBuf>) -> PathBuf {
        let mut new: Vec<PathBuf> = self.packs().difference(before).cloned().collect();
        assert_eq!(new.len(), 2, "one data pack and one tree pack: {new:?}");
        new.sort_by_key(|p| fs::metadata(p).unwrap().len());
        let size = |p: &PathBuf| fs::metadata(p).unwrap().len();
        assert!(
            size(&new[1]) > 4 * size(&new[0]),
            "no pack stands out as data"
        );
        new.pop().unwrap()
    }

    pub fn packs(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let Ok(rd) = fs::read_dir(self.path.join("packs")) else {
            return out;
        };
        for d in rd.flatten() {
            if let Ok(inner) = fs::read_dir(d.path()) {
                for f in inner.flatten() {
                    let name = f.file_name();
                    if name.len() == 64 && name.as_bytes().iter().all(u8::is_ascii_hexdigit) {
                        out.insert(f.path());
                    }
                }
            }
        }
        out
    }

    /// Bytes the repository occupies, not counting the rebuildable index cache, staging and
    /// lock files: packs, snapshots, keys and config.
    pub fn stored_bytes(&self) -> u64 {
        let mut total = 0;
        for d in ["packs", "snapshots", "keys", "config"] {
            total += du(&self.path.join(d));
        }
        total
    }
}

/// Total size in bytes of the regular files under `p` (or of `p` itself).
pub fn du(p: &Path) -> u64 {
    sum_files(p, &|md| md.len())
}

/// Bytes allocated on disk under `p` (sparse files count only their written blocks).
pub fn du_allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    sum_files(p, &|md| md.blocks() * 512)
}

/// Sums `size` over the regular files under `p` (or `p` itself), not following symlinks.
fn sum_files(p: &Path, size: &dyn Fn(&fs::Metadata) -> u64) -> u64 {
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| sum_files(&e.path(), size)).sum())
            .unwrap_or(0)
    } else if md.is_file() {
        size(&md)
    } else {
        0
    }
}

/// A path as `&str` (test paths are UTF-8 temporary directories).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Runs a command to completion, capturing stdout and stderr.
pub fn run(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn clip(b: &[u8]) -> String {
    const MAX: usize = 6000;
    let t = String::from_utf8_lossy(b);
    if t.len() > MAX {
        let mut cut = MAX;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... [{} more bytes]", &t[..cut], t.len() - cut)
    } else {
        t.into_owned()
    }
}

/// Human-readable status, stdout and stderr of a finished process.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        o.status,
        clip(&o.stdout),
        clip(&o.stderr)
    )
}

/// Asserts an exit code, printing the process output otherwise.
#[track_caller]
pub fn assert_code(o: &Output, code: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: expected exit {code}\n{}",
        describe(o)
    );
}

/// Asserts that stderr contains `needle` (case-insensitive).
#[track_caller]
pub fn assert_stderr_contains(o: &Output, needle: &str) {
    let e = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        e.contains(&needle.to_lowercase()),
        "stderr should mention {needle:?}\n{}",
        describe(o)
    );
}

/// Stdout and stderr together, lossily decoded.
pub fn all_output(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Parses stdout as one JSON document.
#[track_caller]
pub fn parse_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(o)))
}

/// Parses stdout as NDJSON (one object per line).
#[track_caller]
pub fn parse_ndjson(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {l:?} is not JSON: {e}\n{}", describe(o)))
        })
        .collect()
}

/// A `u64` field of a JSON object (panics with the object when absent).
#[track_caller]
pub fn u64_of(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {ptr} in {v:#}"))
}

/// A string field of a JSON object (panics with the object when absent).
#[track_caller]
pub fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v:#}"))
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Kills a child we started (by its own handle) and reaps it.
pub fn kill_child(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

// ---------------------------------------------------------------------------------------------
// Data and tree generation
// ---------------------------------------------------------------------------------------------

/// A small, fast, deterministic PRNG (splitmix64): random-looking, incompressible test data.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes a file of `len` random bytes from `seed` (streamed, so large files are cheap).
pub fn write_random(path: &Path, len: usize, seed: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    let mut w = BufWriter::with_capacity(MIB, File::create(path).expect("create"));
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; MIB];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    w.flush().expect("flush");
}

/// Writes `data` to `path`, creating parent directories.
pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Sets mode bits (`chmod`).
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Sets owner and group without following symlinks (`chown -h`).
pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

/// Sets atime and mtime (seconds + nanoseconds) without following symlinks.
pub fn set_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = filetime::FileTime::from_unix_time(sec, nsec);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("utimes {}: {e}", path.display()));
}

/// Sets an extended attribute.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    xattr::set(path, name, value)
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

/// Creates a named pipe.
pub fn mkfifo(path: &Path, mode: u32) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(mode))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// A modest tree of small random files in nested directories (content depends on `seed`).
/// Layout: `top.txt`, `a/one.bin`, `a/b/two.bin`, `a/b/c/three.bin`, `d/four.txt`, `e/` (empty).
pub fn gen_small_tree(root: &Path, seed: u64) {
    fs::create_dir_all(root).expect("mkdir");
    write_file(
        &root.join("top.txt"),
        format!("top file {seed}\n").as_bytes(),
    );
    write_random(&root.join("a/one.bin"), 10_000, seed + 1);
    write_random(&root.join("a/b/two.bin"), 70_000, seed + 2);
    write_random(&root.join("a/b/c/three.bin"), 123_457, seed + 3);
    write_file(
        &root.join("d/four.txt"),
        format!("four {seed}\n").as_bytes(),
    );
    fs::create_dir_all(root.join("e")).expect("mkdir");
}

/// Base of the fixed mtimes in [`gen_rich_tree`]: 2020-09-13T12:26:40Z.
pub const T0: i64 = 1_600_000_000;

/// Options for [`gen_rich_tree`].
pub struct RichTree {
    /// Size of the large random file (0: none).
    pub big: usize,
    /// Number of tiny files in the `many/` directory (a large tree blob).
    pub many: usize,
}

impl Default for RichTree {
    fn default() -> Self {
        RichTree {
            big: 20 * MIB,
            many: 1500,
        }
    }
}

/// A tree with every kind of entry and metadata wayback must keep:
/// regular files of many sizes (0, 1, 4095, 4096, 1 MiB + 1, a large random one), nested and
/// empty directories, relative/absolute/dangling symlinks, a group of three hardlinks, a
/// non-UTF-8 name, setuid/setgid/sticky bits, foreign uid/gid, nanosecond mtimes, `user.*`
/// xattrs and a FIFO. Directory mtimes are set last (deepest first) so they stick.
pub fn gen_rich_tree(root: &Path, opts: &RichTree) {
    fs::create_dir_all(root).expect("mkdir");
    // Regular files of many sizes.
    write_file(&root.join("empty"), b"");
    write_file(&root.join("one_byte"), b"x");
    write_random(&root.join("sizes/4095"), 4095, 11);
    write_random(&root.join("sizes/4096"), 4096, 12);
    write_random(&root.join("sizes/1MiB+1"), MIB + 1, 13);
    write_random(&root.join("sizes/600KiB"), 600 * 1024, 14);
    if opts.big > 0 {
        write_random(&root.join("big/random.bin"), opts.big, 15);
    }
    // Text with a newline-free tail, and a file full of zeros (compressible).
    write_file(&root.join("text.txt"), b"hello\nworld");
    write_file(&root.join("zeros"), &vec![0u8; 300_000]);
    // Nested and empty directories.
    fs::create_dir_all(root.join("nest/l1/l2/l3/l4")).expect("mkdir");
    write_file(&root.join("nest/l1/l2/l3/l4/deep.txt"), b"deep\n");
    fs::create_dir_all(root.join("empty_dir")).expect("mkdir");
    fs::create_dir_all(root.join("nest/empty_inner")).expect("mkdir");
    // Symlinks: relative, absolute, dangling, to a directory.
    fs::create_dir_all(root.join("links")).expect("mkdir");
    std::os::unix::fs::symlink("../text.txt", root.join("links/relative")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("links/dangling")).expect("symlink");
    std::os::unix::fs::symlink("../nest", root.join("links/to_dir")).expect("symlink");
    // Hardlinks: three names of one inode, in different directories.
    write_random(&root.join("hard/h1"), 5000, 16);
    fs::create_dir_all(root.join("hard/sub")).expect("mkdir");
    fs::hard_link(root.join("hard/h1"), root.join("hard/h2")).expect("link");
    fs::hard_link(root.join("hard/h1"), root.join("hard/sub/h3")).expect("link");
    // Non-UTF-8 names (a file and a directory).
    let bad = OsStr::from_bytes(b"bad\xff\xfename");
    write_file(&root.join(bad), b"non-utf8 name\n");
    let bad_dir = root.join(OsStr::from_bytes(b"dir\xfe"));
    write_file(&bad_dir.join("inner"), b"inside a non-utf8 dir\n");
    // Owners, then special mode bits (chown clears setuid, so mode goes after owner).
    fs::create_dir_all(root.join("modes")).expect("mkdir");
    write_file(&root.join("modes/setuid"), b"#!/bin/sh\n");
    lchown(&root.join("modes/setuid"), 1234, 5678);
    chmod(&root.join("modes/setuid"), 0o4755);
    write_file(&root.join("modes/setgid"), b"g\n");
    chmod(&root.join("modes/setgid"), 0o2750);
    write_file(&root.join("modes/private"), b"p\n");
    chmod(&root.join("modes/private"), 0o600);
    write_file(&root.join("modes/readonly"), b"r\n");
    chmod(&root.join("modes/readonly"), 0o444);
    write_file(&root.join("modes/odd"), b"o\n");
    chmod(&root.join("modes/odd"), 0o751);
    fs::create_dir_all(root.join("modes/sticky")).expect("mkdir");
    chmod(&root.join("modes/sticky"), 0o1777);
    fs::create_dir_all(root.join("modes/setgid_dir")).expect("mkdir");
    chmod(&root.join("modes/setgid_dir"), 0o2775);
    write_file(&root.join("owned"), b"owned by 1234:5678\n");
    lchown(&root.join("owned"), 1234, 5678);
    lchown(&root.join("links/relative"), 1234, 5678);
    lchown(&root.join("nest/l1"), 4321, 8765);
    // Extended attributes on files and directories (one binary value, one empty).
    set_xattr(&root.join("text.txt"), "user.comment", b"a comment");
    set_xattr(&root.join("text.txt"), "user.binary", &[0, 1, 2, 255]);
    set_xattr(&root.join("text.txt"), "user.empty", b"");
    set_xattr(&root.join("nest"), "user.dir_attr", b"on a directory");
    set_xattr(&root.join("sizes/1MiB+1"), "user.big", &vec![b'v'; 2000]);
    set_xattr(root, "user.root_attr", b"root");
    // A FIFO, and device nodes where the kernel lets us make them (root with CAP_MKNOD).
    mkfifo(&root.join("fifo"), 0o640);
    fs::create_dir_all(root.join("dev")).expect("mkdir");
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let perm = Mode::from_bits_truncate(0o620);
    if mknod(
        &root.join("dev/null_like"),
        SFlag::S_IFCHR,
        perm,
        makedev(1, 3),
    )
    .is_ok()
    {
        mknod(
            &root.join("dev/loop_like"),
            SFlag::S_IFBLK,
            perm,
            makedev(7, 200),
        )
        .expect("mknod block device");
        lchown(&root.join("dev/loop_like"), 0, 6);
    }
    // Many entries in one directory (a large tree blob).
    for i in 0..opts.many {
        write_file(
            &root.join(format!("many/f{i:04}")),
            format!("{i}\n").as_bytes(),
        );
    }
    // Nanosecond mtimes on everything, directories last and deepest first.
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    let mut i = 0i64;
    let (dirs, others): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|p| fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false));
    for p in others {
        i += 1;
        set_mtime(
            &p,
            T0 + i * 1000,
            (123_456_789 + i as u32 * 7) % 1_000_000_000,
        );
    }
    let mut dirs = dirs;
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in dirs {
        i += 1;
        set_mtime(
            &p,
            T0 + i * 1000,
            (987_654_321 + i as u32 * 13) % 1_000_000_000,
        );
    }
    chmod(root, 0o750);
    set_mtime(root, T0 - 1, 1);
}

/// Every path under `root` (not `root` itself), depth-first, without following symlinks.
pub fn collect_paths(root: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", root.display()))
        .map(|e| e.expect("dirent").path())
        .collect();
    names.sort();
    for p in names {
        let is_dir = fs::symlink_metadata(&p)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        out.push(p.clone());
        if is_dir {
            collect_paths(&p, out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------------------------

fn kind_name(md: &Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn xattrs_of(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(names) = xattr::list(p) {
        for n in names {
            if let Ok(Some(v)) = xattr::get(p, &n) {
                out.insert(n.as_bytes().to_vec(), v);
            }
        }
    }
    out
}

/// Streams both files and returns the offset of the first differing byte, if any.
pub fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; MIB];
    let mut bb = vec![0u8; MIB];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + n as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn entries(root: &Path) -> BTreeMap<Vec<u8>, PathBuf> {
    let mut all = Vec::new();
    collect_paths(root, &mut all);
    all.into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).expect("under root");
            (rel.as_os_str().as_bytes().to_vec(), p)
        })
        .collect()
}

fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        "<root>".into()
    } else {
        String::from_utf8_lossy(rel).into_owned()
    }
}

fn compare_entry(rel: &[u8], pa: &Path, pb: &Path, problems: &mut Vec<String>) {
    let ma = fs::symlink_metadata(pa).expect("lstat a");
    let mb = fs::symlink_metadata(pb).expect("lstat b");
    let name = show(rel);
    let (ka, kb) = (kind_name(&ma), kind_name(&mb));
    if ka != kb {
        problems.push(format!("{name}: type {ka} != {kb}"));
        return;
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        problems.push(format!(
            "{name}: mode {:o} != {:o}",
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        ));
    }
    if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
        problems.push(format!(
            "{name}: owner {}:{} != {}:{}",
            ma.uid(),
            ma.gid(),
            mb.uid(),
            mb.gid()
        ));
    }
    if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        problems.push(format!(
            "{name}: mtime {}.{:09} != {}.{:09}",
            ma.mtime(),
            ma.mtime_nsec(),
            mb.mtime(),
            mb.mtime_nsec()
        ));
    }
    let (xa, xb) = (xattrs_of(pa), xattrs_of(pb));
    if xa != xb {
        problems.push(format!("{name}: xattrs {xa:?} != {xb:?}"));
    }
    match ka {
        "file" => {
            if ma.len() != mb.len() {
                problems.push(format!("{name}: size {} != {}", ma.len(), mb.len()));
            } else if let Some(off) = first_difference(pa, pb) {
                problems.push(format!("{name}: content differs at byte {off}"));
            }
            if ma.nlink() != mb.nlink() {
                problems.push(format!("{name}: nlink {} != {}", ma.nlink(), mb.nlink()));
            }
        }
        "symlink" => {
            let (ta, tb) = (fs::read_link(pa).ok(), fs::read_link(pb).ok());
            if ta != tb {
                problems.push(format!("{name}: link target {ta:?} != {tb:?}"));
            }
        }
        "chardev" | "blockdev" if ma.rdev() != mb.rdev() => {
            problems.push(format!("{name}: rdev {} != {}", ma.rdev(), mb.rdev()));
        }
        _ => {}
    }
}

/// Hardlink groups (sets of relative paths sharing one inode, only groups of 2 or more).
fn link_groups(paths: &BTreeMap<Vec<u8>, PathBuf>) -> BTreeSet<Vec<Vec<u8>>> {
    let mut by_ino: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    for (rel, p) in paths {
        let md = fs::symlink_metadata(p).expect("lstat");
        if !md.is_dir() {
            by_ino
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    by_ino
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Compares two trees: the same names, and for every entry the same type, permission bits
/// (incl. setuid/setgid/sticky), owner, mtime to the nanosecond, xattrs, file content, symlink
/// target and hardlink grouping. With `root_meta`, the roots' own metadata must match too.
/// Panics listing every difference.
#[track_caller]
pub fn assert_trees_equal_opts(a: &Path, b: &Path, root_meta: bool) {
    let ea = entries(a);
    let eb = entries(b);
    let mut problems = Vec::new();
    if root_meta {
        compare_entry(b"", a, b, &mut problems);
    }
    for rel in ea.keys().filter(|k| !eb.contains_key(*k)) {
        problems.push(format!("{}: missing in {}", show(rel), b.display()));
    }
    for rel in eb.keys().filter(|k| !ea.contains_key(*k)) {
        problems.push(format!("{}: unexpected in {}", show(rel), b.display()));
    }
    for (rel, pa) in &ea {
        if let Some(pb) = eb.get(rel) {
            compare_entry(rel, pa, pb, &mut problems);
        }
    }
    let (ga, gb) = (link_groups(&ea), link_groups(&eb));
    if ga != gb {
        let fmt = |g: &BTreeSet<Vec<Vec<u8>>>| -> Vec<Vec<String>> {
            g.iter()
                .map(|x| x.iter().map(|r| show(r)).collect())
                .collect()
        };
        problems.push(format!(
            "hardlink groups differ: {:?} != {:?}",
            fmt(&ga),
            fmt(&gb)
        ));
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        a.display(),
        b.display(),
        problems.join("\n  ")
    );
}

/// [`assert_trees_equal_opts`] including the roots' metadata, plus `diff -r` as a second,
/// independent opinion on names, content and symlink targets.
#[track_caller]
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert_trees_equal_opts(a, b, true);
    assert_diff_r_clean(a, b);
}

/// True for diff's note that two special files (FIFOs, devices) are of the same kind, which is
/// all it can say about them: `File A is a fifo while file B is a fifo`.
fn same_special_kind(line: &str) -> bool {
    let Some((left, right)) = line.split_once(" while file ") else {
        return false;
    };
    let kind = |half: &str| half.rsplit_once(" is a ").map(|(_, k)| k.to_string());
    line.starts_with("File ") && kind(left).is_some() && kind(left) == kind(right)
}

/// Runs `diff -r --no-dereference a b`; the only tolerated output is diff's note that two
/// special files (FIFOs, devices) are of the same kind (it cannot compare them further).
#[track_caller]
pub fn assert_diff_r_clean(a: &Path, b: &Path) {
    let mut c = Command::new("diff");
    c.arg("-r").arg("--no-dereference").arg(a).arg(b);
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    let unexpected: Vec<&str> = out.lines().filter(|l| !same_special_kind(l)).collect();
    assert!(
        matches!(o.status.code(), Some(0) | Some(1)) && unexpected.is_empty(),
        "diff -r {} {} found differences:\n{}",
        a.display(),
        b.display(),
        describe(&o)
    );
}

/// Stops a child with SIGTERM (then SIGKILL) when dropped, also when a test fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
