//! Benchmarks of the log engine: entry encoding, signature checks single and
//! batched, store appends in batches, and `verify` of a large export.
//!
//! `CAPSULE_BENCH_EXPORT_ENTRIES` sets the size of the export verified
//! (default 1,000,000; CI's smoke run uses a small one). For the headline
//! ratio against the raw signature rate, run `capsule bench verify`.

use std::hint::black_box;

use capsule::archive::audit::verify_archive;
use capsule::identity::Identity;
use capsule::log::builder::LogBuilder;
use capsule::log::entry::{Draft, Entry, EntryId};
use capsule::log::record::Record;
use capsule::log::verify::Unverified;
use capsule::log::verify::{signature_valid, signatures_valid, verify_batch};
use capsule::store::Store;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn log(n: u64) -> Vec<Unverified> {
    let identity = Identity::from_seed([1; 32]);
    let mut builder = LogBuilder::new(&identity);
    (1..=n)
        .map(|seq| {
            let payload = Record::post(format!("benchmark post {seq}"))
                .encode()
                .unwrap();
            (builder.next(seq, &payload), Some(payload))
        })
        .collect()
}

fn entry(c: &mut Criterion) {
    let identity = Identity::from_seed([1; 32]);
    let draft = Draft {
        seq: 2,
        timestamp_us: 1,
        backlink: EntryId([1; 32]),
        skiplink: EntryId([1; 32]),
    };
    let payload = Record::post("hello, mesh").encode().unwrap();
    c.bench_function("entry/encode_and_sign", |b| {
        b.iter(|| {
            Entry::sign(
                identity.signing_key(),
                black_box(draft),
                black_box(&payload),
            )
        })
    });
    let e = Entry::sign(identity.signing_key(), draft, &payload);
    c.bench_function("entry/decode", |b| {
        b.iter(|| Entry::decode(black_box(e.as_bytes())))
    });
    c.bench_function("entry/id", |b| b.iter(|| black_box(&e).id()));
}

fn verify(c: &mut Criterion) {
    let entries: Vec<Entry> = log(64).into_iter().map(|(e, _)| e).collect();
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| signature_valid(black_box(&entries[7])))
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("batch_64", |b| {
        b.iter(|| signatures_valid(black_box(&entries)))
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    const N: u64 = 4096;
    const BATCH: usize = 256;
    let verified = verify_batch(log(N)).unwrap();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("append_4096_in_batches_of_256", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(&dir.path().join("b.redb")).unwrap();
                (dir, store, verified.clone())
            },
            |(dir, store, entries)| {
                for chunk in entries.chunks(BATCH) {
                    store.append(chunk.to_vec()).unwrap();
                }
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn export(c: &mut Criterion) {
    let n: u64 = std::env::var("CAPSULE_BENCH_EXPORT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut w = capsule::archive::ArchiveWriter::new(Vec::new()).unwrap();
    for (e, p) in log(n) {
        w.write_entry(&e, p.as_deref()).unwrap();
    }
    let archive = w.finish().unwrap();
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function(format!("verify_{n}_entries"), |b| {
        b.iter(|| verify_archive(std::io::Cursor::new(archive.clone()), None, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, entry, verify, store, export);
criterion_main!(benches);
