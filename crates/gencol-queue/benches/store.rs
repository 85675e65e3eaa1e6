//! The on-disk format decision of `docs/durability.md`, measured: gencol-queue's
//! segmented log against redb (an embedded B-tree store with ACID commits) for what a
//! disk queue does: append a record and make it durable (alone, and 16 records sharing
//! one fsync, as group commit does under load), then read records back and delete them
//! once delivered. Records are 8 KiB, about one generation span with its content.
//!
//! `cargo bench -p gencol-queue --bench store`

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gencol_queue::{Options, Read};
use redb::{Database, ReadableTable, TableDefinition};

const RECORD: usize = 8 * 1024;
const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");

fn record(i: u64) -> Vec<u8> {
    (0..RECORD).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn append_and_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.sample_size(30);
    for per_sync in [1u64, 16] {
        let payloads: Vec<Vec<u8>> = (0..per_sync).map(record).collect();
        let dir = tempfile::tempdir().unwrap();
        let opened = gencol_queue::open(dir.path(), Options::default()).unwrap();
        let mut writer = opened.writer;
        let mut reader = opened.reader;
        g.bench_function(format!("gencol_queue/{per_sync}_per_fsync"), |b| {
            b.iter(|| {
                for p in &payloads {
                    writer.append(p).unwrap();
                }
                writer.sync_point().sync().unwrap();
                // Keep the directory from growing without bound: read and acknowledge.
                while let Ok(Read::Record { seq, .. }) = reader.next() {
                    reader.ack(seq);
                }
                reader.persist_acks().unwrap();
            })
        });

        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("queue.redb")).unwrap();
        let mut seq = 0u64;
        g.bench_function(format!("redb/{per_sync}_per_commit"), |b| {
            b.iter(|| {
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(QUEUE).unwrap();
                    for p in &payloads {
                        seq += 1;
                        t.insert(seq, p.as_slice()).unwrap();
                    }
                    // Delete what an exporter would have delivered meanwhile.
                    if seq > per_sync {
                        for old in seq - 2 * per_sync + 1..=seq - per_sync {
                            t.remove(old).unwrap();
                        }
                    }
                }
                txn.commit().unwrap();
            })
        });
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_1000");
    g.sample_size(10);
    g.bench_function("gencol_queue", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let mut w = gencol_queue::open(dir.path(), Options::default()).unwrap().writer;
                for i in 0..1000 {
                    w.append(&record(i)).unwrap();
                }
                w.sync_point().sync().unwrap();
                drop(w);
                dir
            },
            |dir| {
                let mut r = gencol_queue::open(dir.path(), Options::default()).unwrap().reader;
                let mut n = 0;
                while let Ok(Read::Record { seq, .. }) = r.next() {
                    r.ack(seq);
                    n += 1;
                }
                r.persist_acks().unwrap();
                assert_eq!(n, 1000);
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("redb", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let db = Database::create(dir.path().join("queue.redb")).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(QUEUE).unwrap();
                    for i in 0..1000 {
                        t.insert(i, record(i).as_slice()).unwrap();
                    }
                }
                txn.commit().unwrap();
                drop(db);
                dir
            },
            |dir| {
                let db = Database::create(dir.path().join("queue.redb")).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(QUEUE).unwrap();
                    let mut n = 0;
                    for entry in t.range(0u64..).unwrap() {
                        let (_, v) = entry.unwrap();
                        assert_eq!(v.value().len(), RECORD);
                        n += 1;
                    }
                    assert_eq!(n, 1000);
                    t.retain(|_, _| false).unwrap();
                }
                txn.commit().unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, append_and_sync, replay);
criterion_main!(benches);
