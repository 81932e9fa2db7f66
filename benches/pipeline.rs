//! Hot paths of the pipeline, stage by stage: chunking, keyed hashing, compress+seal, open
//! (decrypt+decompress+verify), tree encode/decode. Run: `cargo bench --bench pipeline`.
//! Throughput figures (MB/s) tell which stage bounds backup and restore speed.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wayback::chunker::{Chunker, ChunkerParams};
use wayback::crypto::MasterKey;
use wayback::id::{BlobId, BlobKind};
use wayback::pack::{open_blob, seal_blob};
use wayback::tree::{ChunkRef, Node, NodeKind, Tree};

fn data(len: usize) -> Vec<u8> {
    // Half compressible: text-like runs mixed with pseudo-random bytes.
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"the quick brown fox jumps over the lazy dog "[i % 44]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let key = MasterKey::generate();
    let buf = data(32 << 20);
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("chunk", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&buf[..], ChunkerParams::DEFAULT);
            let mut n = 0;
            while let Some(c) = ch.next_chunk().unwrap() {
                n += c.len();
            }
            black_box(n)
        })
    });
    g.bench_function("keyed_blake3", |b| b.iter(|| black_box(key.blob_id(&buf))));
    let chunk = &buf[..1 << 20];
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    for level in [1, 3] {
        g.bench_with_input(
            BenchmarkId::new("compress_seal_1MiB", level),
            &level,
            |b, &l| {
                b.iter(|| black_box(seal_blob(&key, BlobKind::Data, BlobId([0; 32]), chunk, l)))
            },
        );
    }
    let id = key.blob_id(chunk);
    let sealed = seal_blob(&key, BlobKind::Data, id, chunk, 3);
    g.bench_function("open_verify_1MiB", |b| {
        b.iter(|| {
            black_box(
                open_blob(
                    &key,
                    BlobKind::Data,
                    &id,
                    chunk.len() as u32,
                    &sealed.bytes,
                    &|| String::new(),
                )
                .unwrap(),
            )
        })
    });
    g.finish();

    let mut tree = Tree {
        nodes: (0..10_000)
            .map(|i| {
                let mut n = Node::new(format!("file-{i:06}.conf").into_bytes(), NodeKind::File);
                n.size = 1234;
                n.content = vec![ChunkRef {
                    id: BlobId([i as u8; 32]),
                    len: 1234,
                }];
                n
            })
            .collect(),
    };
    let enc = tree.encode();
    let mut g = c.benchmark_group("tree_10k_entries");
    g.sample_size(20);
    g.bench_function("encode", |b| b.iter(|| black_box(tree.clone().encode())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(Tree::decode(&enc, &BlobId([0; 32])).unwrap()))
    });
    g.bench_function("find", |b| {
        b.iter(|| black_box(tree.find(b"file-005000.conf")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
