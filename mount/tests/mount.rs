//! Mounts an in-memory view for real and drives it with the tools users will use.
//!
//! Every test mounts its own tree into its own temporary directory, so tests run in parallel.
//! Mounts are released by `Drop` guards, so a failing assertion does not leave one behind.
//! Needs /dev/fuse and root (or fusermount3), as the mount driver does.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wayback_mount::{
    is_mounted, is_stale_mount, mount_background, mount_foreground, unmount, Attr, DirEntry, Entry,
    Errno, Ino, Kind, MountError, MountHandle, MountOptions, OpenFlags, View, ROOT_INO,
};

// ---------------------------------------------------------------------------------------------
// The in-memory tree

const MTIME: u64 = 1_600_000_000;
const BIG_LEN: usize = 3 * 1024 * 1024;
const MANY: usize = 5000;
const HELLO: &[u8] = b"hello, wayback\n";
const SLOW_READ: Duration = Duration::from_secs(3);

/// Byte `i` of big.bin: no period a page-aligned bug could hide in.
fn big_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) ^ (i as u8) ^ ((i >> 12) as u8)
}

fn big_content() -> Vec<u8> {
    (0..BIG_LEN as u64).map(big_byte).collect()
}

enum Content {
    File(Arc<Vec<u8>>),
    Dir(Vec<(OsString, Ino)>),
    Link(Vec<u8>),
    Special,
}

struct Node {
    attr: Attr,
    content: Content,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Named inodes tests refer to.
struct Inos {
    broken: Ino,
    slow: Ino,
    big: Ino,
    many: Ino,
}

struct MemView {
    nodes: HashMap<Ino, Node>,
    inos: Inos,
    slow_reads: bool,
    negative_ttl: Duration,
    failed_lookups: AtomicUsize,
    readdirs_of_many: AtomicUsize,
}

struct Builder {
    nodes: HashMap<Ino, Node>,
    next: Ino,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder {
            nodes: HashMap::new(),
            next: ROOT_INO,
        };
        b.node(Kind::Dir, 0o755, 0, Content::Dir(Vec::new()));
        b
    }

    fn node(&mut self, kind: Kind, perm: u16, uid: u32, content: Content) -> Ino {
        let ino = self.next;
        self.next += 1;
        let size = match &content {
            Content::File(d) => d.len() as u64,
            Content::Link(t) => t.len() as u64,
            Content::Dir(_) => 4096,
            Content::Special => 0,
        };
        let blocks = match kind {
            Kind::File | Kind::Dir => size.div_ceil(4096) * 8,
            _ => 0,
        };
        let attr = Attr {
            ino,
            size,
            blocks,
            kind,
            perm,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid,
            gid: if uid == 0 { 0 } else { 100 },
            rdev: 0,
            mtime: UNIX_EPOCH + Duration::from_secs(MTIME),
        };
        self.nodes.insert(
            ino,
            Node {
                attr,
                content,
                xattrs: Vec::new(),
            },
        );
        ino
    }

    fn link(&mut self, parent: Ino, name: impl AsRef<OsStr>, ino: Ino) {
        if let Some(Content::Dir(entries)) = self.nodes.get_mut(&parent).map(|n| &mut n.content) {
            entries.push((name.as_ref().to_owned(), ino));
        }
    }

    fn file(&mut self, parent: Ino, name: impl AsRef<OsStr>, data: &[u8]) -> Ino {
        let ino = self.node(
            Kind::File,
            0o644,
            1000,
            Content::File(Arc::new(data.to_vec())),
        );
        self.link(parent, name, ino);
        ino
    }

    fn dir(&mut self, parent: Ino, name: &str) -> Ino {
        let ino = self.node(Kind::Dir, 0o755, 0, Content::Dir(Vec::new()));
        self.link(parent, name, ino);
        ino
    }
}

impl MemView {
    /// The standard tree:
    /// ```text
    /// /hello.txt  /big.bin (3 MiB)  /link -> hello.txt  /hard1  /sub/hard2 (same inode)
    /// /sub/nested.txt  /xattr.txt (user.test, user.other)  /caf\xe9.txt (not UTF-8)
    /// /many/f00000..f04999  /broken.txt (EIO on read)  /slow.txt  /pipe (fifo)
    /// ```
    fn new() -> MemView {
        let mut b = Builder::new();
        b.file(ROOT_INO, "hello.txt", HELLO);
        let big = b.node(Kind::File, 0o444, 0, Content::File(Arc::new(big_content())));
        b.link(ROOT_INO, "big.bin", big);
        let link = b.node(
            Kind::Symlink,
            0o777,
            0,
            Content::Link(b"hello.txt".to_vec()),
        );
        b.link(ROOT_INO, "link", link);
        let hard = b.file(ROOT_INO, "hard1", b"shared\n");
        if let Some(n) = b.nodes.get_mut(&hard) {
            n.attr.nlink = 2;
        }
        let sub = b.dir(ROOT_INO, "sub");
        b.link(sub, "hard2", hard);
        b.file(sub, "nested.txt", b"nested\n");
        let x = b.file(ROOT_INO, "xattr.txt", b"has xattrs\n");
        if let Some(n) = b.nodes.get_mut(&x) {
            n.xattrs = vec![
                ("user.test".into(), b"it works".to_vec()),
                ("user.other".into(), b"x".to_vec()),
            ];
        }
        b.file(ROOT_INO, OsStr::from_bytes(b"caf\xe9.txt"), b"latin1\n");
        let many = b.dir(ROOT_INO, "many");
        for i in 0..MANY {
            b.file(many, format!("f{i:05}"), format!("{i}\n").as_bytes());
        }
        let broken = b.file(ROOT_INO, "broken.txt", b"0123456789");
        let slow = b.file(ROOT_INO, "slow.txt", b"slow\n");
        let pipe = b.node(Kind::Fifo, 0o644, 0, Content::Special);
        b.link(ROOT_INO, "pipe", pipe);
        MemView {
            nodes: b.nodes,
            inos: Inos {
                broken,
                slow,
                big,
                many,
            },
            slow_reads: false,
            negative_ttl: Duration::ZERO,
            failed_lookups: AtomicUsize::new(0),
            readdirs_of_many: AtomicUsize::new(0),
        }
    }

    fn node(&self, ino: Ino) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entry(&self, ino: Ino) -> Result<Entry, Errno> {
        Ok(Entry {
            attr: self.node(ino)?.attr.clone(),
            ttl: Duration::from_secs(1),
        })
    }

    /// Every name in the tree, as `find` would print it relative to the root.
    fn all_paths(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, b".".to_vec())];
        while let Some((ino, path)) = stack.pop() {
            if let Ok(Node {
                content: Content::Dir(entries),
                ..
            }) = self.node(ino)
            {
                for (name, child) in entries {
                    let mut p = path.clone();
                    p.push(b'/');
                    p.extend_from_slice(name.as_bytes());
                    stack.push((*child, p.clone()));
                    out.push(p);
                }
            }
        }
        out
    }
}

impl View for MemView {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno> {
        let Content::Dir(entries) = &self.node(parent)?.content else {
            return Err(Errno::ENOTDIR);
        };
        match entries.iter().find(|(n, _)| n == name) {
            Some((_, ino)) => self.entry(*ino),
            None => {
                self.failed_lookups.fetch_add(1, Ordering::SeqCst);
                Err(Errno::ENOENT)
            }
        }
    }

    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        self.entry(ino)
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        if ino == self.inos.many {
            self.readdirs_of_many.fetch_add(1, Ordering::SeqCst);
        }
        let Content::Dir(entries) = &self.node(ino)?.content else {
            return Err(Errno::ENOTDIR);
        };
        entries
            .iter()
            .map(|(name, child)| {
                Ok(DirEntry {
                    ino: *child,
                    kind: self.node(*child)?.attr.kind,
                    name: name.clone(),
                })
            })
            .collect()
    }

    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        self.node(ino)?;
        Ok(OpenFlags {
            keep_cache: ino == self.inos.big,
            direct_io: false,
        })
    }

    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if ino == self.inos.broken {
            return Err(Errno::EIO);
        }
        if ino == self.inos.slow && self.slow_reads {
            std::thread::sleep(SLOW_READ);
        }
        let Content::File(data) = &self.node(ino)?.content else {
            return Err(Errno::EISDIR);
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(size as usize).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>, Errno> {
        match &self.node(ino)?.content {
            Content::Link(target) => Ok(target.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn listxattr(&self, ino: Ino) -> Result<Vec<OsString>, Errno> {
        Ok(self
            .node(ino)?
            .xattrs
            .iter()
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>, Errno> {
        self.node(ino)?
            .xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or(Errno::ENODATA)
    }

    fn negative_ttl(&self, _parent: Ino) -> Duration {
        self.negative_ttl
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A view mounted in a fresh temporary directory; unmounts on drop, before the directory goes.
struct Mounted {
    handle: Option<MountHandle>,
    view: Arc<MemView>,
    dir: tempfile::TempDir,
    mp: PathBuf,
}

impl Mounted {
    fn new(view: MemView) -> Mounted {
        Mounted::with_options(view, &MountOptions::default())
    }

    fn with_options(view: MemView, opts: &MountOptions) -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other users (the allow_other test) must be able to reach the mountpoint.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).expect("mkdir mountpoint");
        let view = Arc::new(view);
        let handle = mount_background(Arc::clone(&view), &mp, opts).expect("mount");
        let mp = handle.mountpoint().to_owned();
        Mounted {
            handle: Some(handle),
            view,
            dir,
            mp,
        }
    }

    fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mp.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.unmount() {
                eprintln!("unmount failed: {e}");
            }
        }
    }
}

/// Runs a command with a C locale (so error messages are predictable) and returns its output.
fn run(cmd: &mut Command) -> Output {
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a shell pipeline; any failing stage fails it.
fn sh(script: &str) -> Output {
    run(Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(script))
}

fn ok(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ok_str(out: Output) -> String {
    String::from_utf8(ok(out)).expect("utf-8 output")
}

fn fails_with(out: Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unexpectedly succeeded");
    assert!(
        stderr.contains(message),
        "expected {message:?}, got {stderr:?}"
    );
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn tools_see_the_tree() {
    let m = Mounted::new(MemView::new());

    let ls = ok(run(Command::new("ls").arg("-la").arg(&m.mp)));
    let ls_text = String::from_utf8_lossy(&ls);
    for name in [
        "hello.txt",
        "big.bin",
        "link -> hello.txt",
        "sub",
        "many",
        "pipe",
    ] {
        assert!(ls_text.contains(name), "ls -la lacks {name}: {ls_text}");
    }
    assert!(
        ls.windows(8).any(|w| w == b"caf\xe9.txt"),
        "non-UTF-8 name missing from ls"
    );

    let stat = |rel: &str| {
        ok_str(run(Command::new("stat")
            .arg("-c")
            .arg("%i %h %s %a %u %g %Y %F")
            .arg(m.path(rel))))
    };
    let hello = stat("hello.txt");
    let f: Vec<&str> = hello.split_whitespace().collect();
    assert_eq!(
        &f[1..],
        [
            "1",
            "15",
            "644",
            "1000",
            "100",
            "1600000000",
            "regular",
            "file"
        ]
    );
    let (h1, h2) = (stat("hard1"), stat("sub/hard2"));
    assert_eq!(h1, h2, "hardlinked names must share one inode");
    assert!(h1.split_whitespace().nth(1) == Some("2"), "nlink: {h1}");
    assert!(stat("big.bin").starts_with(&format!("{} 1 {BIG_LEN} 444 0 0", m.view.inos.big)));
    assert!(stat("pipe").contains("fifo"));
    assert!(stat("sub").contains("directory"));

    assert_eq!(
        ok_str(run(Command::new("readlink").arg(m.path("link")))),
        "hello.txt\n"
    );
    assert_eq!(ok(run(Command::new("cat").arg(m.path("link")))), HELLO);

    let value = ok_str(run(Command::new("getfattr")
        .args(["-n", "user.test", "--only-values"])
        .arg(m.path("xattr.txt"))));
    assert_eq!(value, "it works");
    let dump = ok_str(run(Command::new("getfattr")
        .arg("-d")
        .arg(m.path("xattr.txt"))));
    assert!(dump.contains("user.test=\"it works\""), "{dump}");
    assert!(dump.contains("user.other=\"x\""), "{dump}");
    fails_with(
        run(Command::new("getfattr")
            .args(["-n", "user.absent"])
            .arg(m.path("xattr.txt"))),
        "No such attribute",
    );

    let mut non_utf8 = m.mp.clone().into_os_string();
    non_utf8.push("/");
    non_utf8.push(OsStr::from_bytes(b"caf\xe9.txt"));
    assert_eq!(ok(run(Command::new("cat").arg(&non_utf8))), b"latin1\n");

    let expected_names = m.view.all_paths().len() + 1;
    let find = ok_str(sh(&format!("find {} | wc -l", q(&m.mp))));
    assert_eq!(find.trim(), expected_names.to_string());

    // du counts each inode once, hardlinks included.
    let blocks: u64 = m.view.nodes.values().map(|n| n.attr.blocks).sum();
    let du = ok_str(run(Command::new("du").args(["-s", "-B1"]).arg(&m.mp)));
    assert_eq!(
        du.split_whitespace().next(),
        Some((blocks * 512).to_string().as_str())
    );

    ok(run(Command::new("tar")
        .args(["cf", "/dev/null"])
        .arg(&m.mp)));
    // A real archive reads every file (the damaged one excluded).
    let listed = ok_str(sh(&format!(
        "tar cf - --exclude=./broken.txt -C {} . | tar tf - | wc -l",
        q(&m.mp)
    )));
    assert_eq!(listed.trim(), (expected_names - 1).to_string());

    let df = ok_str(run(Command::new("df").arg("-P").arg(&m.mp)));
    assert!(df.contains("wayback"), "{df}");
}

#[test]
fn contents_read_back_exactly() {
    let m = Mounted::new(MemView::new());
    let expected = big_content();

    assert_eq!(
        ok(run(Command::new("cat").arg(m.path("big.bin")))),
        expected
    );
    let copy = m.dir.path().join("expected.bin");
    std::fs::write(&copy, &expected).expect("write expected");
    ok(run(Command::new("cmp").arg(m.path("big.bin")).arg(&copy)));
    // Again, now from the kept page cache.
    ok(run(Command::new("cmp").arg(m.path("big.bin")).arg(&copy)));

    // Random block ranges, some running past the end of the file.
    let blocks = (BIG_LEN / 4096) as u64;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let skip = seed % (blocks + 4);
        let count = 1 + (seed >> 32) % 40;
        let got = ok(run(Command::new("dd")
            .arg(format!("if={}", m.path("big.bin").display()))
            .args(["bs=4096", "status=none"])
            .arg(format!("skip={skip}"))
            .arg(format!("count={count}"))));
        let start = ((skip * 4096) as usize).min(BIG_LEN);
        let end = (((skip + count) * 4096) as usize).min(BIG_LEN);
        assert!(
            got == expected[start..end],
            "dd skip={skip} count={count} differs"
        );
    }
    // Unaligned reads straight through the syscall interface.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path("big.bin")).expect("open big.bin");
        for off in [0usize, 1, 4095, 4097, 131_071, 1_000_003, BIG_LEN - 10] {
            let mut buf = vec![0; 20_000];
            let n = f.read_at(&mut buf, off as u64).expect("pread");
            let end = (off + 20_000).min(BIG_LEN);
            assert_eq!(&buf[..n], &expected[off..end], "pread at {off}");
        }
    }

    assert_eq!(std::fs::read(m.path("hello.txt")).expect("read"), HELLO);
    assert_eq!(
        std::fs::read(m.path("many/f04321")).expect("read"),
        b"4321\n"
    );
}

#[test]
fn large_directory_is_listed_once_per_open() {
    let m = Mounted::new(MemView::new());
    let before = m.view.readdirs_of_many.load(Ordering::SeqCst);
    // `ls -f` lists in directory order, including . and .., over many readdir requests.
    let raw = ok(run(Command::new("ls").arg("-f").arg(m.path("many"))));
    assert_eq!(
        m.view.readdirs_of_many.load(Ordering::SeqCst) - before,
        1,
        "the view must be asked once per opendir"
    );
    let names: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(names.len(), MANY + 2);
    assert_eq!(
        names.iter().filter(|n| **n == b"." || **n == b"..").count(),
        2
    );
    let mut files: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with(b"f"))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    files.sort();
    let expected: Vec<String> = (0..MANY).map(|i| format!("f{i:05}")).collect();
    assert_eq!(files, expected, "every entry exactly once");

    let long = ok_str(run(Command::new("ls").arg("-la").arg(m.path("many"))));
    assert_eq!(long.lines().count(), MANY + 3, "total + . + .. + entries");

    // Directory handles are independent: two readers interleaving see full listings.
    let a = std::fs::read_dir(m.path("many")).expect("read_dir");
    let b = std::fs::read_dir(m.path("many")).expect("read_dir");
    let (mut na, mut nb) = (0, 0);
    for (x, y) in a.zip(b) {
        x.expect("entry");
        y.expect("entry");
        na += 1;
        nb += 1;
    }
    assert_eq!((na, nb), (MANY, MANY));
}

#[test]
fn writes_fail_read_only() {
    let m = Mounted::new(MemView::new());
    let rofs = "Read-only file system";
    fails_with(run(Command::new("touch").arg(m.path("newfile"))), rofs);
    fails_with(sh(&format!("echo x > {}", q(&m.path("hello.txt")))), rofs);
    fails_with(sh(&format!("echo x >> {}", q(&m.path("hello.txt")))), rofs);
    fails_with(run(Command::new("mkdir").arg(m.path("d"))), rofs);
    fails_with(run(Command::new("rm").arg(m.path("hello.txt"))), rofs);
    fails_with(run(Command::new("rmdir").arg(m.path("sub"))), rofs);
    fails_with(
        run(Command::new("mv").arg(m.path("hello.txt")).arg(m.path("x"))),
        rofs,
    );
    fails_with(
        run(Command::new("ln").arg(m.path("hello.txt")).arg(m.path("x"))),
        rofs,
    );
    fails_with(
        run(Command::new("ln").arg("-s").arg("t").arg(m.path("x"))),
        rofs,
    );
    fails_with(
        run(Command::new("chmod").arg("600").arg(m.path("hello.txt"))),
        rofs,
    );
    fails_with(
        run(Command::new("truncate").arg("-s0").arg(m.path("hello.txt"))),
        rofs,
    );
    fails_with(
        run(Command::new("setfattr")
            .args(["-n", "user.x", "-v", "1"])
            .arg(m.path("hello.txt"))),
        rofs,
    );
    let err = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("hello.txt"))
        .expect_err("open for writing");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // Nothing changed.
    assert_eq!(std::fs::read(m.path("hello.txt")).expect("read"), HELLO);
}

#[test]
fn errors_reach_callers() {
    let m = Mounted::new(MemView::new());
    fails_with(
        run(Command::new("stat").arg(m.path("missing"))),
        "No such file or directory",
    );
    fails_with(
        run(Command::new("cat").arg(m.path("sub/missing"))),
        "No such file or directory",
    );
    fails_with(
        run(Command::new("ls").arg(m.path("hello.txt/x"))),
        "Not a directory",
    );
    fails_with(
        run(Command::new("cat").arg(m.path("broken.txt"))),
        "Input/output error",
    );
    // One damaged file does not affect the others.
    assert_eq!(ok(run(Command::new("cat").arg(m.path("hello.txt")))), HELLO);
    assert_eq!(
        ok(run(Command::new("cat").arg(m.path("sub/nested.txt")))),
        b"nested\n"
    );
    fails_with(
        run(Command::new("readlink").arg("-v").arg(m.path("hello.txt"))),
        "Invalid argument",
    );
}

#[test]
fn slow_read_does_not_block_listing() {
    let mut view = MemView::new();
    view.slow_reads = true;
    let m = Mounted::new(view);
    let slow = m.path("slow.txt");
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        let data = std::fs::read(slow).expect("read slow.txt");
        (data, start.elapsed())
    });
    // Let the read reach the view and start sleeping.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let ls =
        String::from_utf8_lossy(&ok(run(Command::new("ls").arg("-la").arg(&m.mp)))).into_owned();
    let listing_took = start.elapsed();
    assert!(ls.contains("hello.txt"));
    let stat_took = {
        let start = Instant::now();
        std::fs::metadata(m.path("sub/nested.txt")).expect("stat");
        start.elapsed()
    };
    let (data, read_took) = reader.join().expect("reader thread");
    assert_eq!(data, b"slow\n");
    assert!(
        read_took >= SLOW_READ - Duration::from_millis(100),
        "the read was not slow ({read_took:?}), so the test proves nothing"
    );
    assert!(
        listing_took < Duration::from_secs(1),
        "ls took {listing_took:?} while a read was stuck"
    );
    assert!(
        stat_took < Duration::from_secs(1),
        "stat took {stat_took:?}"
    );
}

#[test]
fn negative_entries_are_cached_only_when_the_view_allows() {
    // Live namespace: every probe must reach the view (a WAL file may appear any moment).
    let m = Mounted::new(MemView::new());
    for _ in 0..3 {
        assert!(std::fs::metadata(m.path("sub/absent")).is_err());
    }
    assert_eq!(m.view.failed_lookups.load(Ordering::SeqCst), 3);

    // Immutable namespace: the kernel remembers the miss.
    let mut view = MemView::new();
    view.negative_ttl = Duration::from_secs(60);
    let m = Mounted::new(view);
    for _ in 0..3 {
        let err = std::fs::metadata(m.path("sub/absent")).expect_err("absent");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
    assert_eq!(m.view.failed_lookups.load(Ordering::SeqCst), 1);
}

#[test]
fn allow_other_controls_access_by_other_users() {
    let nobody = |m: &Mounted| {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(m.path("hello.txt")))
    };
    let private = Mounted::new(MemView::new());
    fails_with(nobody(&private), "Permission denied");
    drop(private);

    let shared = Mounted::with_options(
        MemView::new(),
        &MountOptions {
            allow_other: true,
            ..MountOptions::default()
        },
    );
    assert_eq!(ok(nobody(&shared)), HELLO);
}

#[test]
fn bad_mountpoints_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let err = mount_background(MemView::new(), &missing, &MountOptions::default())
        .expect_err("missing mountpoint");
    assert!(matches!(err, MountError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let err = mount_background(MemView::new(), &file, &MountOptions::default())
        .expect_err("file mountpoint");
    assert!(matches!(err, MountError::NotADirectory(_)), "{err}");

    let m = Mounted::new(MemView::new());
    let err = mount_background(MemView::new(), &m.mp, &MountOptions::default())
        .expect_err("mounted twice");
    assert!(matches!(err, MountError::AlreadyMounted(_)), "{err}");
    assert!(is_mounted(&m.mp));
    assert!(!is_stale_mount(&m.mp));

    let err = unmount(dir.path()).expect_err("not a mount");
    assert!(matches!(err, MountError::NotMounted(_)), "{err}");
}

#[test]
fn unmounting_while_busy_detaches_lazily() {
    let m = Mounted::new(MemView::new());
    let f = std::fs::File::open(m.path("big.bin")).expect("open");
    let mut m = m;
    let handle = m.handle.take().expect("handle");
    let mp = m.mp.clone();
    // Unmount on another thread: it waits for the session, which waits for `f` to close.
    let unmounting = std::thread::spawn(move || handle.unmount());
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(&mp) {
        assert!(Instant::now() < deadline, "mount not detached");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still served for the open file.
    let mut buf = vec![0; 4096];
    {
        use std::os::unix::fs::FileExt;
        let n = f.read_at(&mut buf, 8192).expect("read after detach");
        assert_eq!(&buf[..n], &big_content()[8192..8192 + n]);
    }
    drop(f);
    unmounting.join().expect("unmount thread").expect("unmount");
}

// ---------------------------------------------------------------------------------------------
// Process-level lifecycle: a child process (this test binary, running the ignored helper below)
// serves a mount in the foreground.

const HELPER_ENV: &str = "WAYBACK_MOUNT_TEST_HELPER_MP";
const HELPER_AUTO_UNMOUNT_ENV: &str = "WAYBACK_MOUNT_TEST_HELPER_AUTO_UNMOUNT";

/// Not a test: the body of the child process used by the lifecycle tests.
#[test]
#[ignore = "helper run in a child process by the lifecycle tests"]
fn helper_serve_foreground() {
    let Some(mp) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let opts = MountOptions {
        auto_unmount: std::env::var_os(HELPER_AUTO_UNMOUNT_ENV).is_some(),
        ..MountOptions::default()
    };
    mount_foreground(MemView::new(), Path::new(&mp), &opts).expect("mount_foreground");
}

/// A child process serving a mount; killed and its mount cleared on drop.
struct Server {
    child: Child,
    mp: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(false)
    }

    fn start_with(auto_unmount: bool) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).expect("mkdir");
        let mp = mp.canonicalize().expect("canonicalize");
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        if auto_unmount {
            cmd.env(HELPER_AUTO_UNMOUNT_ENV, "1");
        }
        let child = cmd
            .args([
                "--ignored",
                "--exact",
                "helper_serve_foreground",
                "--test-threads=1",
                "--quiet",
            ])
            .env(HELPER_ENV, &mp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn helper");
        let mut server = Server {
            child,
            mp,
            _dir: dir,
        };
        server.wait_until(|s| is_mounted(&s.mp), "mounted");
        // The root answers once the session serves.
        std::fs::read_dir(&server.mp).expect("list mount");
        server
    }

    fn wait_until(&mut self, cond: impl Fn(&Server) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("helper exited early ({status}) waiting for: {what}");
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the child to exit and returns whether it succeeded.
    fn exit_success(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "helper did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("kill");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mp) {
            if let Err(e) = unmount(&self.mp) {
                eprintln!("cleanup unmount failed: {e}");
            }
        }
    }
}

#[test]
fn foreground_unmounts_on_sigterm() {
    let mut s = Server::start();
    assert_eq!(std::fs::read(s.mp.join("hello.txt")).expect("read"), HELLO);
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        s.exit_success(),
        "mount_foreground must return Ok on SIGTERM"
    );
    assert!(!is_mounted(&s.mp));
    assert!(std::fs::read_dir(&s.mp)
        .expect("plain dir")
        .next()
        .is_none());
}

#[test]
fn foreground_returns_when_unmounted_externally() {
    let mut s = Server::start();
    unmount(&s.mp).expect("unmount");
    assert!(
        s.exit_success(),
        "mount_foreground must return Ok after fusermount3 -u"
    );
    assert!(!is_mounted(&s.mp));
}

#[test]
fn stale_mount_is_detected_refused_and_cleared() {
    let mut s = Server::start();
    s.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = s.child.wait();
    assert!(is_mounted(&s.mp), "a killed server leaves its mount behind");
    assert!(is_stale_mount(&s.mp));

    let err = mount_foreground(MemView::new(), &s.mp, &MountOptions::default())
        .expect_err("stale mountpoint");
    assert!(matches!(err, MountError::Stale(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("wayback umount"), "{msg}");
    assert!(msg.contains("fusermount3 -u"), "{msg}");
    let err = mount_background(MemView::new(), &s.mp, &MountOptions::default())
        .expect_err("stale mountpoint");
    assert!(matches!(err, MountError::Stale(_)), "{err}");

    unmount(&s.mp).expect("unmount stale");
    assert!(!is_mounted(&s.mp));
    assert!(!is_stale_mount(&s.mp));
    // And it can be mounted again.
    let handle =
        mount_background(MemView::new(), &s.mp, &MountOptions::default()).expect("remount");
    assert_eq!(std::fs::read(s.mp.join("hello.txt")).expect("read"), HELLO);
    handle.unmount().expect("unmount");
}

#[test]
fn auto_unmount_leaves_no_stale_mount() {
    let mut s = Server::start_with(true);
    assert_eq!(std::fs::read(s.mp.join("hello.txt")).expect("read"), HELLO);
    s.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = s.child.wait();
    // fusermount3's watcher process unmounts once it sees the server's socket close; allow it
    // time on a loaded machine (one CI run needed more than 10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mounted(&s.mp) {
        assert!(
            Instant::now() < deadline,
            "fusermount3 did not clean up in 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!is_stale_mount(&s.mp));
}

#[test]
fn mtime_is_reported() {
    let m = Mounted::new(MemView::new());
    let meta = std::fs::metadata(m.path("hello.txt")).expect("stat");
    assert_eq!(
        meta.modified().expect("mtime"),
        SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME)
    );
}
