//! Content-defined chunking of byte streams (FastCDC 2020).
//!
//! Why content-defined: an insertion early in a file shifts every later byte; fixed-size blocks
//! would all change, content-defined boundaries re-synchronise after the edit, so only the chunks
//! around the change are new. The parameters are part of the repository config (changing them
//! changes every chunk id, so they are fixed at `init`).

use std::io::{ErrorKind, Read};

use fastcdc::v2020::FastCDC;

/// Chunk size bounds, stored in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (except the last of a stream).
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB: large enough that per-chunk overhead (index entry, AEAD tag,
    /// lookup) stays negligible, small enough that a 1% clustered change of a dump adds ~1% bytes.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };

    /// Checks the bounds FastCDC accepts (config read from disk is untrusted).
    pub fn validate(&self) -> bool {
        (64..=1 << 20).contains(&self.min)
            && (256..=4 << 20).contains(&self.avg)
            && (1024..=16 << 20).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
    }
}

/// Streams a reader into content-defined chunks with one bounded buffer (2 x max).
///
/// Why not `fastcdc::StreamCDC`: it drains and re-fills its buffer per chunk (a memmove of the
/// whole buffer each time) and allocates every chunk; this keeps one buffer, hands out borrowed
/// slices, and lets the caller copy only chunks that dedup says are new.
pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes handed out so far.
    pub consumed: u64,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R, params: ChunkerParams) -> Self {
        Chunker {
            reader,
            params,
            buf: vec![0u8; 2 * params.max as usize],
            start: 0,
            end: 0,
            eof: false,
            consumed: 0,
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.params.max as usize;
        if self.end - self.start >= max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at end of stream.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.fill()?;
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        let p = self.params;
        let cdc = FastCDC::new(&self.buf[self.start..self.end], p.min, p.avg, p.max);
        let (_, cut) = cdc.cut(0, avail);
        let cut = cut.max(1).min(avail);
        let s = self.start;
        self.start += cut;
        self.consumed += cut as u64;
        Ok(Some(&self.buf[s..s + cut]))
    }

    /// Gives back the reader (to check its state after the stream ended).
    pub fn into_inner(self) -> R {
        self.reader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: ChunkerParams = ChunkerParams {
        min: 256,
        avg: 1024,
        max: 4096,
    };

    fn chunks(data: &[u8], p: ChunkerParams) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(data, p);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch.to_vec());
        }
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn chunks_concatenate_to_input_and_respect_bounds(len in 0usize..40_000, seed in any::<u64>()) {
            let data = pseudo_random(len, seed);
            let cs = chunks(&data, SMALL);
            prop_assert_eq!(cs.concat(), data);
            for (i, c) in cs.iter().enumerate() {
                prop_assert!(c.len() <= SMALL.max as usize);
                if i + 1 < cs.len() {
                    prop_assert!(c.len() >= SMALL.min as usize);
                }
            }
        }

        #[test]
        fn boundaries_resync_after_an_insertion(seed in any::<u64>(), at in 0usize..10_000, ins in prop::collection::vec(any::<u8>(), 1..300)) {
            let data = pseudo_random(80_000, seed);
            let mut edited = data[..at].to_vec();
            edited.extend_from_slice(&ins);
            edited.extend_from_slice(&data[at..]);
            let a = chunks(&data, SMALL);
            let b = chunks(&edited, SMALL);
            // After a short window past the edit, both streams cut at the same places: their
            // chunk lists share a suffix covering everything beyond that window.
            let mut shared = 0usize;
            for (x, y) in a.iter().rev().zip(b.iter().rev()) {
                if x != y { break; }
                shared += x.len();
            }
            let window = 8 * SMALL.max as usize;
            prop_assert!(shared + at + window >= data.len(),
                "only the last {shared} bytes re-synchronised after an insertion at {at}");
        }
    }

    #[test]
    fn default_params_are_valid() {
        assert!(ChunkerParams::DEFAULT.validate());
        assert!(!ChunkerParams {
            min: 0,
            avg: 1,
            max: 2
        }
        .validate());
    }
}
