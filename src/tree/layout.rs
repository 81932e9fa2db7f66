//! Where each byte of a file lives among its chunks.
//!
//! Why one type: the mount, `cat`, `restore`, `diff --content` and pg-at's copy-on-write layer
//! all map file offsets to chunks. Each used to carry its own copy of that loop, and each
//! trusted the chunk it decrypted to be as long as its reference said: a longer chunk shifted
//! the rest of the file, a shorter one panicked or read short. [`FileLayout`] is built only
//! from a chunk list that lays out exactly the file's size, and [`FileLayout::check`] is the
//! one place that refuses a decrypted chunk of another length, so no reader can hand out
//! wrong bytes.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::tree::{content_len, ChunkRef, Node};

/// A file's chunk list with cumulative offsets, validated against the file's size.
#[derive(Clone, Debug)]
pub struct FileLayout {
    what: String,
    chunks: Vec<ChunkRef>,
    /// `ends[i]` is the offset one past chunk `i` (so `ends` is sorted and `ends.last()` is
    /// the size).
    ends: Vec<u64>,
}

/// One chunk's share of a read: bytes `within` of chunk `index`, which starts at `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Index into [`FileLayout::chunks`].
    pub index: usize,
    /// File offset of the chunk's first byte.
    pub start: u64,
    /// The byte range of the chunk that the read wants.
    pub within: Range<usize>,
}

impl FileLayout {
    /// The layout of a file node; `Corrupt` when its chunk lengths do not add up to its size.
    pub fn new(node: &Node) -> Result<FileLayout> {
        Self::from_chunks(node.name_lossy(), &node.content, node.size)
    }

    /// The layout of `chunks` for a file of `size` bytes, `what` naming it in errors.
    pub fn from_chunks(what: String, chunks: &[ChunkRef], size: u64) -> Result<FileLayout> {
        let sum = content_len(chunks);
        if sum != Some(size) {
            return Err(Error::Corrupt(format!(
                "{what}: chunk lengths add up to {}, size is {size}",
                sum.map_or("more than 2^64".into(), |s| s.to_string())
            )));
        }
        let mut acc = 0u64;
        let ends = chunks
            .iter()
            .map(|c| {
                acc += c.len as u64;
                acc
            })
            .collect();
        Ok(FileLayout {
            what,
            chunks: chunks.to_vec(),
            ends,
        })
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The chunk references, in file order.
    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// File offset of chunk `i`'s first byte.
    pub fn start(&self, i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Index of the chunk holding byte `offset`; `None` at or past the end of the file.
    pub fn chunk_at(&self, offset: u64) -> Option<usize> {
        let i = self.ends.partition_point(|&e| e <= offset);
        (i < self.chunks.len()).then_some(i)
    }

    /// The pieces of chunks that make up `len` bytes at `offset` (clipped to the file), in
    /// order; empty chunks are skipped.
    pub fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = Piece> + '_ {
        let end = offset.saturating_add(len).min(self.size());
        let first = self.chunk_at(offset).unwrap_or(self.chunks.len());
        (first..self.chunks.len())
            .map(move |index| (index, self.start(index)))
            .take_while(move |&(_, start)| start < end)
            .filter_map(move |(index, start)| {
                let from = offset.max(start) - start;
                let to = end.min(self.ends[index]) - start;
                (to > from).then_some(Piece {
                    index,
                    start,
                    within: from as usize..to as usize,
                })
            })
    }

    /// Refuses a decrypted chunk whose length differs from its reference (`Corrupt`).
    pub fn check(&self, index: usize, data: &[u8]) -> Result<()> {
        let c = &self.chunks[index];
        if data.len() != c.len as usize {
            return Err(Error::Corrupt(format!(
                "{}: chunk {} at offset {} holds {} bytes, its reference says {}",
                self.what,
                c.id.short(),
                self.start(index),
                data.len(),
                c.len
            )));
        }
        Ok(())
    }

    /// The bytes of `piece` out of its decrypted chunk, after [`FileLayout::check`].
    pub fn slice<'a>(&self, piece: &Piece, data: &'a [u8]) -> Result<&'a [u8]> {
        self.check(piece.index, data)?;
        Ok(&data[piece.within.clone()])
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the file), fetching chunks with
    /// `fetch`; every chunk is length-checked.
    pub fn read<D: std::ops::Deref<Target = Vec<u8>>>(
        &self,
        offset: u64,
        len: u64,
        fetch: &mut dyn FnMut(&ChunkRef) -> Result<D>,
    ) -> Result<Vec<u8>> {
        let want = len.min(self.size().saturating_sub(offset));
        // Capacity from the validated size, but never more than a sane read up front: the
        // size is only as honest as the tree, and the data arrives chunk by chunk anyway.
        let mut out = Vec::with_capacity(want.min(64 << 20) as usize);
        for p in self.pieces(offset, len) {
            let data = fetch(&self.chunks[p.index])?;
            out.extend_from_slice(self.slice(&p, &data)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn layout(lens: &[u32]) -> FileLayout {
        let chunks: Vec<ChunkRef> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| ChunkRef {
                id: BlobId([i as u8; 32]),
                len,
            })
            .collect();
        FileLayout::from_chunks("f".into(), &chunks, lens.iter().map(|&l| l as u64).sum()).unwrap()
    }

    /// Chunk `i`'s bytes are `i` repeated, so the content at any offset is known.
    fn content(lens: &[u32]) -> Vec<u8> {
        lens.iter()
            .enumerate()
            .flat_map(|(i, &l)| std::iter::repeat_n(i as u8, l as usize))
            .collect()
    }

    #[test]
    fn sizes_that_the_chunks_do_not_lay_out_are_corrupt() {
        let c = [ChunkRef {
            id: BlobId([0; 32]),
            len: 10,
        }];
        for size in [0, 9, 11] {
            let e = FileLayout::from_chunks("f".into(), &c, size).unwrap_err();
            assert!(e.is_corrupt(), "{e}");
        }
        let big = vec![c[0]; 3].into_iter().map(|mut c| {
            c.len = u32::MAX;
            c
        });
        let big: Vec<_> = big.collect();
        assert!(FileLayout::from_chunks("f".into(), &big, 1).is_err());
    }

    #[test]
    fn chunks_of_the_wrong_length_are_refused() {
        let l = layout(&[4, 4]);
        let mut fetch = |c: &ChunkRef| -> Result<Arc<Vec<u8>>> {
            Ok(Arc::new(vec![0; if c.id.0[0] == 0 { 5 } else { 3 }]))
        };
        assert!(l.read(0, 8, &mut fetch).unwrap_err().is_corrupt());
        assert!(l.read(5, 1, &mut fetch).unwrap_err().is_corrupt());
        assert!(l.check(1, &[0; 3]).unwrap_err().is_corrupt());
        assert!(l.check(1, &[0; 4]).is_ok());
    }

    proptest! {
        #[test]
        fn reads_match_the_content_at_every_offset(
            lens in prop::collection::vec(0u32..40, 0..8),
            offset in 0u64..200,
            len in 0u64..200,
        ) {
            let l = layout(&lens);
            let all = content(&lens);
            let got = l
                .read(offset, len, &mut |c: &ChunkRef| Ok(Arc::new(vec![c.id.0[0]; c.len as usize])))
                .unwrap();
            let from = (offset as usize).min(all.len());
            let to = (offset.saturating_add(len) as usize).min(all.len());
            prop_assert_eq!(got, all[from..to].to_vec());
            if let Some(i) = l.chunk_at(offset) {
                prop_assert!(l.start(i) <= offset && offset < l.start(i) + lens[i] as u64);
            } else {
                prop_assert!(offset >= l.size());
            }
        }
    }
}
