//! Block-level copy-on-write files over snapshot content, for `wayback pg-at`.
//!
//! Why not overlayfs alone: PostgreSQL opens every relation file `O_RDWR`, even to read it, and
//! overlayfs copies a file up whole on the first writable open. A query or a replayed update
//! touching a 1 GiB table segment made pg-at copy the whole segment into scratch, so its start
//! time grew with the cluster, like a restore. Here a file is its snapshot content plus a
//! sparse delta file: a write stores only the 8 KiB blocks it touches (PostgreSQL's page size),
//! reads take written blocks from the delta and the rest from the repository. pg-at keeps
//! overlayfs for the namespace (small files, new files, renames) and replaces the big files in
//! its upper layer with symlinks to these.
//!
//! Original content is decrypted a whole chunk at a time into a sparse plaintext cache file
//! (same offsets as the original), once per chunk: PostgreSQL reads 8 KiB pages at random, and
//! decrypting a 1 MiB chunk per page read from a bounded memory cache thrashed (measured: WAL
//! replay 10x slower than on a restored copy). The cache holds only chunks something touched.
//!
//! State per file (in memory, rebuilt never: the scratch area lives as long as one pg-at):
//! the logical size, a bitmap of blocks present in the delta, which chunks are in the
//! plaintext cache, and `orig_limit`, the length of the original content still visible (a
//! truncate lowers it; bytes beyond read as zeros).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use wayback_mount::{Attr, DirEntry, Entry, Errno, Ino, Kind, OpenFlags, View, ROOT_INO};

use crate::repo::Repository;
use crate::tree::{FileLayout, Node};

/// Copy-on-write granularity: PostgreSQL's page size.
pub const BLOCK: u64 = 8192;

struct State {
    size: u64,
    orig_limit: u64,
    written: Vec<u64>,
    /// Chunk `i` of the original is in the plaintext cache file.
    cached: Vec<bool>,
    mtime: SystemTime,
}

impl State {
    fn is_written(&self, b: u64) -> bool {
        self.written
            .get((b / 64) as usize)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }
    fn mark(&mut self, b: u64) {
        let i = (b / 64) as usize;
        if self.written.len() <= i {
            self.written.resize(i + 1, 0);
        }
        self.written[i] |= 1 << (b % 64);
    }
    fn unmark_from(&mut self, first: u64) {
        for b in first..(self.written.len() as u64 * 64) {
            if let Some(w) = self.written.get_mut((b / 64) as usize) {
                *w &= !(1 << (b % 64));
            }
        }
    }
}

struct CowFile {
    name: OsString,
    node: Node,
    /// Where each chunk of `node.content` lies (validated against `node.size`).
    layout: FileLayout,
    delta: File,
    plain: File,
    state: Mutex<State>,
}

/// A flat directory of copy-on-write files (`0`, `1`, ...), one per snapshot file given.
pub struct CowView {
    repo: Arc<Repository>,
    files: Vec<CowFile>,
    created: SystemTime,
}

impl CowView {
    /// A view whose file `i` starts as `nodes[i]`'s content; written blocks go to
    /// `delta_dir/<i>`, decrypted original chunks to `cache_dir/<i>` (both sparse).
    pub fn new(
        repo: Arc<Repository>,
        nodes: Vec<Node>,
        delta_dir: &Path,
        cache_dir: &Path,
    ) -> std::io::Result<CowView> {
        std::fs::create_dir_all(delta_dir)?;
        std::fs::create_dir_all(cache_dir)?;
        let open = |p: std::path::PathBuf| {
            // Plaintext pages: readable by the owner only.
            std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
        };
        let mut files = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.into_iter().enumerate() {
            let layout = FileLayout::new(&node)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            files.push(CowFile {
                name: OsString::from(i.to_string()),
                state: Mutex::new(State {
                    size: node.size,
                    orig_limit: node.size,
                    written: Vec::new(),
                    cached: vec![false; node.content.len()],
                    mtime: crate::fsview::systime_ns(node.mtime_ns),
                }),
                layout,
                node,
                delta: open(delta_dir.join(i.to_string()))?,
                plain: open(cache_dir.join(i.to_string()))?,
            });
        }
        Ok(CowView {
            repo,
            files,
            created: SystemTime::now(),
        })
    }

    fn file(&self, ino: Ino) -> Result<&CowFile, Errno> {
        ino.checked_sub(2)
            .and_then(|i| self.files.get(i as usize))
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: Ino) -> Result<Attr, Errno> {
        if ino == ROOT_INO {
            return Ok(Attr {
                ino,
                size: 0,
                blocks: 0,
                kind: Kind::Dir,
                perm: 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                mtime: self.created,
            });
        }
        let f = self.file(ino)?;
        let st = f.state.lock().expect("poisoned");
        Ok(Attr {
            ino,
            size: st.size,
            blocks: st.size.div_ceil(512),
            kind: Kind::File,
            perm: (f.node.mode & 0o7777) as u16,
            nlink: 1,
            uid: f.node.uid,
            gid: f.node.gid,
            rdev: 0,
            mtime: st.mtime,
        })
    }

    fn entry(&self, ino: Ino) -> Result<Entry, Errno> {
        // Sizes change under writes: never let the kernel cache attributes.
        Ok(Entry {
            attr: self.attr(ino)?,
            ttl: Duration::ZERO,
        })
    }

    /// The original content of `len` bytes at `off` (zeros past `limit`), ignoring the delta;
    /// decrypts each chunk of the range into the plaintext cache the first time.
    fn base_bytes(
        &self,
        f: &CowFile,
        st: &mut State,
        limit: u64,
        off: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno> {
        let mut out = vec![0u8; len];
        if off >= limit {
            return Ok(out);
        }
        let take = ((limit - off) as usize).min(len);
        for p in f.layout.pieces(off, take as u64) {
            if !st.cached[p.index] {
                let c = &f.layout.chunks()[p.index];
                let data = self
                    .repo
                    .read_blob(crate::id::BlobKind::Data, &c.id)
                    .and_then(|d| f.layout.check(p.index, &d).map(|()| d))
                    .map_err(|e| {
                        tracing::error!(error = %e, file = %f.node.name_lossy(), offset = p.start, "copy-on-write base read failed");
                        Errno::EIO
                    })?;
                f.plain.write_all_at(&data, p.start).map_err(io_err)?;
                st.cached[p.index] = true;
            }
        }
        read_zero_filled(&f.plain, &mut out[..take], off).map_err(io_err)?;
        Ok(out)
    }
}

/// Reads from the delta file; bytes past its end (after a truncate and regrowth) are zeros.
fn read_zero_filled(file: &File, buf: &mut [u8], mut pos: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => {
                done += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn io_err(e: std::io::Error) -> Errno {
    tracing::error!(error = %e, "copy-on-write delta file I/O failed");
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

impl View for CowView {
    fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Errno> {
        if parent != ROOT_INO {
            return Err(Errno::ENOTDIR);
        }
        let i = self
            .files
            .iter()
            .position(|f| f.name == name)
            .ok_or(Errno::ENOENT)?;
        self.entry(i as Ino + 2)
    }

    fn getattr(&self, ino: Ino) -> Result<Entry, Errno> {
        self.entry(ino)
    }

    fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Errno> {
        if ino != ROOT_INO {
            return Err(Errno::ENOTDIR);
        }
        Ok(self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| DirEntry {
                ino: i as Ino + 2,
                kind: Kind::File,
                name: f.name.clone(),
            })
            .collect())
    }

    fn open(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        self.file(ino)?;
        Ok(OpenFlags::default())
    }

    fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let f = self.file(ino)?;
        let mut st = f.state.lock().expect("poisoned");
        let end = (offset + size as u64).min(st.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let block_end = ((b + 1) * BLOCK).min(end);
            // Runs of equal provenance are read in one go.
            let mut run_end = block_end;
            let written = st.is_written(b);
            while run_end < end && st.is_written(run_end / BLOCK) == written {
                run_end = ((run_end / BLOCK + 1) * BLOCK).min(end);
            }
            let len = (run_end - pos) as usize;
            if written {
                let start = out.len();
                out.resize(start + len, 0);
                read_zero_filled(&f.delta, &mut out[start..], pos).map_err(io_err)?;
            } else {
                let limit = st.orig_limit;
                out.extend_from_slice(&self.base_bytes(f, &mut st, limit, pos, len)?);
            }
            pos = run_end;
        }
        Ok(out)
    }

    fn readlink(&self, _ino: Ino) -> Result<Vec<u8>, Errno> {
        Err(Errno::EINVAL)
    }

    fn writable(&self) -> bool {
        true
    }

    fn open_for_write(&self, ino: Ino) -> Result<OpenFlags, Errno> {
        self.file(ino)?;
        Ok(OpenFlags::default())
    }

    fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let f = self.file(ino)?;
        let mut st = f.state.lock().expect("poisoned");
        let end = offset + data.len() as u64;
        // Blocks written only in part get their current content first.
        for b in [offset / BLOCK, end.saturating_sub(1) / BLOCK] {
            let (bs, be) = (b * BLOCK, (b + 1) * BLOCK);
            let partial = offset > bs || end < be;
            if partial && !st.is_written(b) && !data.is_empty() {
                let limit = st.orig_limit.min(st.size);
                let cur = self.base_bytes(f, &mut st, limit, bs, BLOCK as usize)?;
                f.delta.write_all_at(&cur, bs).map_err(io_err)?;
                st.mark(b);
            }
        }
        f.delta.write_all_at(data, offset).map_err(io_err)?;
        for b in offset / BLOCK..end.div_ceil(BLOCK) {
            st.mark(b);
        }
        st.size = st.size.max(end);
        st.mtime = SystemTime::now();
        Ok(data.len() as u32)
    }

    fn set_size(&self, ino: Ino, size: u64) -> Result<Entry, Errno> {
        let f = self.file(ino)?;
        {
            let mut st = f.state.lock().expect("poisoned");
            if size < st.size {
                // Keep the boundary block's surviving bytes; everything after reads as zeros.
                let b = size / BLOCK;
                if size % BLOCK != 0 && !st.is_written(b) {
                    let limit = st.orig_limit;
                    let cur =
                        self.base_bytes(f, &mut st, limit, b * BLOCK, (size % BLOCK) as usize)?;
                    f.delta.write_all_at(&cur, b * BLOCK).map_err(io_err)?;
                    st.mark(b);
                }
                st.unmark_from(size.div_ceil(BLOCK));
                st.orig_limit = st.orig_limit.min(size);
                f.delta.set_len(size).map_err(io_err)?;
            }
            st.size = size;
            st.mtime = SystemTime::now();
        }
        self.entry(ino)
    }

    fn fsync(&self, ino: Ino) -> Result<(), Errno> {
        let f = self.file(ino)?;
        f.delta.sync_data().map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, usize, u8),
        SetSize(u64),
        Read(u64, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..3_300_000, 0usize..40_000, any::<u8>()).prop_map(|(o, l, b)| Op::Write(o, l, b)),
            1 => (0u64..3_300_000).prop_map(Op::SetSize),
            3 => (0u64..3_400_000, 0u32..200_000).prop_map(|(o, l)| Op::Read(o, l)),
        ]
    }

    /// A repository holding one 3 MB file of pseudo-random bytes, shared by all cases.
    fn fixture() -> &'static (tempfile::TempDir, Arc<Repository>, Node, Vec<u8>) {
        static F: std::sync::OnceLock<(tempfile::TempDir, Arc<Repository>, Node, Vec<u8>)> =
            std::sync::OnceLock::new();
        F.get_or_init(|| {
            std::env::set_var("WAYBACK_INSECURE_FAST_KDF", "1");
            let dir = tempfile::tempdir().unwrap();
            Repository::init(&dir.path().join("r"), b"pw").unwrap();
            let repo =
                Repository::open(&dir.path().join("r"), b"pw", crate::repo::Access::Write).unwrap();
            let mut x = 0x9e3779b97f4a7c15u64;
            let base: Vec<u8> = (0..3_000_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let counters = Arc::new(crate::ingest::Counters::default());
            let node = crate::ingest::with_saver(&repo, counters, |s| {
                crate::ingest::stream::store_stream(&repo, s, &base[..], "rel")
            })
            .unwrap();
            assert!(node.content.len() > 1);
            (dir, Arc::new(repo), node, base)
        })
    }

    #[test]
    fn a_chunk_of_another_length_than_its_reference_is_eio() {
        let (dir, repo, node, base) = fixture();
        let scratch = tempfile::tempdir_in(dir.path()).unwrap();
        // First reference shortened by 100 bytes (size adjusted so the layout is consistent):
        // the stored chunk is longer than the reference says.
        let mut lying = node.clone();
        lying.content[0].len -= 100;
        lying.size -= 100;
        // A node whose size the chunks do not lay out is refused up front.
        let mut short = node.clone();
        short.size += 1;
        assert!(CowView::new(
            repo.clone(),
            vec![short],
            &scratch.path().join("x"),
            &scratch.path().join("y")
        )
        .is_err());
        let v = CowView::new(
            repo.clone(),
            vec![lying, node.clone()],
            &scratch.path().join("d"),
            &scratch.path().join("c"),
        )
        .unwrap();
        let eio = |r: Result<Vec<u8>, Errno>| matches!(r, Err(e) if e.0 == libc::EIO);
        assert!(eio(v.read(2, 0, 4096)));
        let near_end = node.content[0].len as u64 - 300;
        assert!(eio(v.read(2, near_end, 4096)));
        assert!(v.read(3, 0, 4096).unwrap() == base[..4096]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn behaves_like_a_plain_file(ops in prop::collection::vec(op(), 1..25)) {
            let (dir, repo, node, base) = fixture();
            let deltas = tempfile::tempdir_in(dir.path()).unwrap();
            let v = CowView::new(repo.clone(), vec![node.clone()], &deltas.path().join("d"), &deltas.path().join("c")).unwrap();
            let mut model = base.clone();
            for op in ops {
                match op {
                    Op::Write(o, l, b) => {
                        let data = vec![b; l];
                        prop_assert_eq!(v.write(2, o, &data).unwrap() as usize, l);
                        if l > 0 {
                            let end = o as usize + l;
                            if model.len() < end {
                                model.resize(end, 0);
                            }
                            model[o as usize..end].fill(b);
                        }
                    }
                    Op::SetSize(n) => {
                        prop_assert_eq!(v.set_size(2, n).unwrap().attr.size, n);
                        model.resize(n as usize, 0);
                    }
                    Op::Read(o, l) => {
                        let got = v.read(2, o, l).unwrap();
                        let s = (o as usize).min(model.len());
                        let e = (o as usize + l as usize).min(model.len());
                        prop_assert!(got == model[s..e].to_vec(), "read {} +{}", o, l);
                    }
                }
                prop_assert_eq!(v.getattr(2).unwrap().attr.size, model.len() as u64);
            }
            let all = v.read(2, 0, model.len() as u32 + 10).unwrap();
            prop_assert!(all == model, "final content differs");
            // Only touched blocks are stored: the delta is sparse.
            let used = std::fs::metadata(deltas.path().join("d/0")).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }).unwrap();
            prop_assert!(used <= model.len() as u64 + 2 * BLOCK);
        }
    }
}
