//! Engine benchmarks on the workload of issue 6: documents of 1-20 KiB HTML
//! with 3-5 columns, 10-100 inputs each with an output, mixed value types.
//!
//! `cargo bench --bench engine` runs, in one process:
//!
//! 1. criterion benchmarks (short: 10 samples, 2 s each), in groups
//!    `lookup` (blob, columns, one input, one output), `chain` (all inputs of
//!    a document of 10 / 100 / 1000 inputs) and `write_always`,
//!    `write_interval`, `write_never` (create, add input, set output, update
//!    blob, update input, delete, one writer);
//! 2. a report printed as markdown tables: lookup p50/p99 and throughput on
//!    1 and 2 threads, 1 vs 32 concurrent writers under each sync policy with
//!    writes per fsync (group commit), compaction throughput, read latency
//!    while a compaction runs against idle, and space after compaction.
//!
//! Environment: `STRATUM_DOCS` (documents in the read data set, default
//! 5000), `STRATUM_REPORT=0` skips the report, `STRATUM_REPORT=only` skips
//! criterion. Arguments after `--` go to criterion (a filter, `--list`, ...).
//! Data lives in temporary directories that are deleted at the end.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{DocSpec, Measured, Pool, Rng, Stored, Table};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use stratum_io::{Engine, Id, Options, SyncPolicy};
use tempfile::TempDir;

const INTERVAL: Duration = Duration::from_millis(10);
const POLICIES: [(&str, SyncPolicy); 3] =
    [("always", SyncPolicy::Always), ("interval:10ms", SyncPolicy::Interval(INTERVAL)), ("never", SyncPolicy::None)];

fn options(sync: SyncPolicy) -> Options {
    Options { sync, compaction: None, ..Options::default() }
}

// ----- the read data set ----------------------------------------------------

/// A loaded store: `docs` documents of the workload plus three documents
/// with exactly 10, 100 and 1000 inputs for the chain reads.
struct Fixture {
    engine: Engine,
    docs: Vec<Stored>,
    chains: Vec<Stored>,
    /// Random (document, input) pairs to read, so reads hit the whole set.
    targets: Vec<(Id, Id)>,
    load: Duration,
    records: u64,
    _dir: TempDir,
}

impl Fixture {
    fn load(docs: usize) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path(), options(SyncPolicy::None)).expect("open");
        let mut rng = Rng::new(1);
        let started = Instant::now();
        let stored: Vec<Stored> =
            (0..docs).map(|n| common::store(&engine, &common::doc_spec(&mut rng, n as u64, None))).collect();
        let chains = [10, 100, 1000]
            .into_iter()
            .map(|n| common::store(&engine, &common::doc_spec(&mut rng, 1_000_000 + n as u64, Some(n))))
            .collect();
        engine.flush().expect("flush");
        let load = started.elapsed();
        let targets = (0..8192)
            .map(|_| {
                let d = rng.pick(&stored);
                (d.id, *rng.pick(&d.inputs))
            })
            .collect();
        let records = engine.stats().records;
        // Warm the page cache: every blob once.
        for d in &stored {
            black_box(engine.document_blob(d.id).expect("blob"));
        }
        Fixture { engine, docs: stored, chains, targets, load, records, _dir: dir }
    }

    fn target(&self, i: u64) -> (Id, Id) {
        self.targets[(i as usize) % self.targets.len()]
    }
}

// ----- criterion ------------------------------------------------------------

fn bench_reads(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    let i = AtomicU64::new(0);
    let next = || f.target(i.fetch_add(1, Ordering::Relaxed));
    g.bench_function("blob", |b| b.iter(|| black_box(f.engine.document_blob(next().0).unwrap())));
    g.bench_function("columns", |b| b.iter(|| black_box(f.engine.document_columns(next().0).unwrap())));
    g.bench_function("input", |b| {
        b.iter(|| {
            let (d, i) = next();
            black_box(f.engine.input(d, i).unwrap())
        })
    });
    g.bench_function("output", |b| {
        b.iter(|| {
            let (d, i) = next();
            black_box(f.engine.output(d, i).unwrap())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("chain");
    for chain in &f.chains {
        let n = chain.inputs.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("inputs", n), &chain.id, |b, &id| {
            b.iter(|| black_box(f.engine.inputs(id).unwrap()))
        });
    }
    g.finish();
}

/// A small store for write benchmarks: 200 documents with 10 inputs each,
/// loaded without fsyncs, then reopened under `sync`.
fn write_store(sync: SyncPolicy) -> (TempDir, Engine, Vec<Stored>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = {
        let engine = Engine::open(dir.path(), options(SyncPolicy::None)).expect("open");
        let mut rng = Rng::new(2);
        let docs = (0..200).map(|n| common::store(&engine, &common::doc_spec(&mut rng, n, Some(10)))).collect();
        engine.close().expect("close");
        docs
    };
    let engine = Engine::open(dir.path(), options(sync)).expect("reopen");
    (dir, engine, docs)
}

fn bench_writes(c: &mut Criterion, pool: &Pool) {
    for (name, sync) in POLICIES {
        let (_dir, engine, docs) = write_store(sync);
        let mut g = c.benchmark_group(format!("write_{}", name.split(':').next().unwrap()));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(1));
        let n = AtomicU64::new(0);
        let next = || n.fetch_add(1, Ordering::Relaxed) as usize;
        g.bench_function("create", |b| {
            b.iter(|| {
                let i = next();
                engine.create_document(&pool.blobs[i % 64], pool.columns[i % 16].clone()).unwrap()
            })
        });
        g.bench_function("add_input", |b| {
            b.iter(|| {
                let i = next();
                engine.add_input(docs[i % docs.len()].id, &pool.values[i % 256]).unwrap()
            })
        });
        g.bench_function("set_output", |b| {
            b.iter(|| {
                let i = next();
                let d = &docs[i % docs.len()];
                engine.set_output(d.id, d.inputs[i % d.inputs.len()], &pool.values[i % 256]).unwrap()
            })
        });
        g.bench_function("update_blob", |b| {
            b.iter(|| {
                let i = next();
                engine.update_blob(docs[i % docs.len()].id, &pool.blobs[i % 64]).unwrap()
            })
        });
        g.bench_function("update_input", |b| {
            b.iter(|| {
                let i = next();
                let d = &docs[i % docs.len()];
                engine.update_input(d.id, d.inputs[i % d.inputs.len()], &pool.values[i % 256]).unwrap()
            })
        });
        // Deleting needs documents to delete: each batch creates its own
        // (10 inputs with outputs each), untimed, in the same store.
        g.bench_function("delete", |b| {
            b.iter_batched(
                || {
                    let i = next();
                    let id = engine.create_document(&pool.blobs[i % 64], pool.columns[i % 16].clone()).unwrap();
                    for k in 0..10 {
                        let input = engine.add_input(id, &pool.values[(i + k) % 256]).unwrap();
                        engine.set_output(id, input, &pool.values[(i + k + 1) % 256]).unwrap();
                    }
                    id
                },
                |id| engine.delete_document(id).unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

// ----- the report -----------------------------------------------------------

fn lookup_report(f: &Fixture, budget: Duration) {
    println!("### Point lookups ({} documents, {} records, page cache warm)\n", f.docs.len(), f.records);
    type Op<'a> = Box<dyn Fn(u64) + Sync + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        ("blob", Box::new(|i| drop(black_box(f.engine.document_blob(f.target(i).0).unwrap())))),
        ("columns", Box::new(|i| drop(black_box(f.engine.document_columns(f.target(i).0).unwrap())))),
        (
            "input",
            Box::new(|i| {
                let (d, n) = f.target(i);
                drop(black_box(f.engine.input(d, n).unwrap()))
            }),
        ),
        (
            "output",
            Box::new(|i| {
                let (d, n) = f.target(i);
                drop(black_box(f.engine.output(d, n).unwrap()))
            }),
        ),
    ];
    let mut t = Table::new(&["operation", "p50", "p99", "p99.9", "1 thread", "2 threads"]);
    for (name, op) in &ops {
        let one = common::measure(budget, 1000, op);
        let two = common::measure_threads(2, budget, |t, i| op(i * 2 + t as u64));
        t.row(vec![
            name.to_string(),
            common::dur(one.p50),
            common::dur(one.p99),
            common::dur(one.p999),
            common::rate(one.per_sec()),
            common::rate(two.per_sec()),
        ]);
    }
    for chain in &f.chains {
        let n = chain.inputs.len();
        let m = common::measure(budget, 20, |_| drop(black_box(f.engine.inputs(chain.id).unwrap())));
        t.row(vec![
            format!("chain of {n} inputs"),
            common::dur(m.p50),
            common::dur(m.p99),
            common::dur(m.p999),
            format!("{} ({} inputs/s)", common::rate(m.per_sec()), common::rate(m.per_sec() * n as f64)),
            String::new(),
        ]);
    }
    t.print();
}

/// What one cached blob read costs at least: the parts of
/// `document_blob` measured alone on blobs of the same mean size (one
/// positioned read into a new buffer, the record's CRC-32, the copy of the
/// blob out of the record), next to the engine's figure.
fn blob_floor(f: &Fixture, budget: Duration) {
    use std::os::unix::fs::FileExt;
    let len = f.docs.iter().map(|d| f.engine.document_blob(d.id).unwrap().len()).sum::<usize>() / f.docs.len();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("floor");
    // As large as the store's segments, so the page-cache working set matches.
    let size: u64 = f.engine.stats().total_bytes.max(64 << 20);
    std::fs::write(&path, vec![0x61_u8; size as usize]).expect("floor file");
    let file = std::fs::File::open(&path).expect("floor file");
    let mut rng = Rng::new(7);
    let offsets: Vec<u64> = (0..4096).map(|_| rng.range(0, size - len as u64 - 1)).collect();
    let buf = vec![0x62_u8; len];
    let pread = common::measure(budget, 1000, |i| {
        let mut b = vec![0; len];
        file.read_exact_at(&mut b, offsets[i as usize % offsets.len()]).unwrap();
        black_box(b);
    });
    let crc = common::measure(budget, 1000, |_| {
        black_box(crc32fast::hash(black_box(&buf)));
    });
    let copy = common::measure(budget, 1000, |_| drop(black_box(black_box(&buf[..]).to_vec())));
    let engine = common::measure(budget, 1000, |i| drop(black_box(f.engine.document_blob(f.target(i).0).unwrap())));
    println!("### Where a cached blob read goes (mean blob {len} B)\n");
    let mut t = Table::new(&["step", "p50", "mean"]);
    for (name, m) in [
        ("pread of the record into a new Vec (page cache)", &pread),
        ("CRC-32 of the record (crc32fast)", &crc),
        ("copy of the blob out of the record (to_vec)", &copy),
        ("engine.document_blob (all of it, plus index lookup)", &engine),
    ] {
        t.row(vec![name.into(), common::dur(m.p50), common::dur(m.elapsed / m.ops.max(1) as u32)]);
    }
    t.print();
}

/// One write of the group-commit mix: each writer creates a document, then
/// adds inputs with outputs to it (a new document every 10 inputs).
fn mixed_write(engine: &Engine, pool: &Pool, state: &mut (Id, u64), seed: u64) -> u64 {
    let (doc, k) = state;
    if *k % 21 == 0 {
        *doc = engine
            .create_document(&pool.blobs[(seed as usize) % 64], pool.columns[(seed as usize) % 16].clone())
            .unwrap();
        *k += 1;
        return 1;
    }
    let input = engine.add_input(*doc, &pool.values[(seed as usize) % 256]).unwrap();
    engine.set_output(*doc, input, &pool.values[(seed as usize + 7) % 256]).unwrap();
    *k += 2;
    2
}

struct WriteRun {
    writes: u64,
    elapsed: Duration,
    fsyncs: u64,
    per_write: Measured,
}

fn write_run(sync: SyncPolicy, writers: usize, pool: &Pool, budget: Duration) -> WriteRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(sync)).expect("open");
    let writes = AtomicU64::new(0);
    let fsyncs_before = engine.stats().fsyncs;
    let states: Vec<std::sync::Mutex<(Id, u64)>> = (0..writers).map(|_| std::sync::Mutex::new((0, 0))).collect();
    let m = common::measure_threads(writers, budget, |t, i| {
        let n = mixed_write(&engine, pool, &mut states[t].lock().unwrap(), i * 31 + t as u64);
        writes.fetch_add(n, Ordering::Relaxed);
    });
    let fsyncs = engine.stats().fsyncs - fsyncs_before;
    drop(engine);
    WriteRun { writes: writes.into_inner(), elapsed: m.elapsed, fsyncs, per_write: m }
}

fn write_report(pool: &Pool, budget: Duration) {
    println!(
        "### Writes: 1 and 32 writers (mix: create a document, then 10 x (add input + set output); \
         blobs {} B and values {} B on average)\n",
        pool.mean_blob_len(),
        pool.mean_value_len()
    );
    let probe = tempfile::tempdir().expect("tempdir");
    println!("Before: {}.\n", common::fsync_line(&common::fsync_probe(probe.path(), 200)));
    let mut t = Table::new(&[
        "policy",
        "writers",
        "writes/s",
        "p50 / call",
        "p99 / call",
        "fsyncs",
        "writes per fsync",
        "vs 1 writer",
    ]);
    let mut summary = Vec::new();
    for (name, sync) in POLICIES {
        let mut one = 0.0;
        for writers in [1, 32] {
            let r = write_run(sync, writers, pool, budget);
            let per_sec = r.writes as f64 / r.elapsed.as_secs_f64();
            if writers == 1 {
                one = per_sec;
            }
            let per_fsync =
                if r.fsyncs == 0 { "-".to_string() } else { format!("{:.1}", r.writes as f64 / r.fsyncs as f64) };
            t.row(vec![
                name.to_string(),
                writers.to_string(),
                common::rate(per_sec),
                common::dur(r.per_write.p50),
                common::dur(r.per_write.p99),
                r.fsyncs.to_string(),
                per_fsync.clone(),
                format!("{:.2}x", per_sec / one),
            ]);
            if name == "always" {
                summary.push((writers, per_sec, per_fsync));
            }
        }
    }
    t.print();
    println!("After: {}.\n", common::fsync_line(&common::fsync_probe(probe.path(), 200)));
    if let [(_, one, _), (_, many, per_fsync)] = summary.as_slice() {
        println!(
            "Group commit: 32 writers under `always` write {:.1}x the rate of one writer that fsyncs each write \
             (target >= 10x), {per_fsync} writes per fsync.\n",
            many / one
        );
    }
}

fn compaction_report(docs: usize, budget: Duration) {
    println!("### Compaction ({docs} documents, every blob rewritten twice and every input once)\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options(SyncPolicy::None)).expect("open");
    let mut rng = Rng::new(3);
    let specs: Vec<DocSpec> = (0..docs).map(|n| common::doc_spec(&mut rng, n as u64, None)).collect();
    let stored: Vec<Stored> = specs.iter().map(|s| common::store(&engine, s)).collect();
    let pool = Pool::new(4);
    for round in 0..2 {
        for (n, d) in stored.iter().enumerate() {
            engine.update_blob(d.id, &pool.blobs[(n + round) % 64]).unwrap();
        }
    }
    for (n, d) in stored.iter().enumerate() {
        for (k, &i) in d.inputs.iter().enumerate() {
            engine.update_input(d.id, i, &pool.values[(n + k) % 256]).unwrap();
        }
    }
    engine.flush().unwrap();
    let before = engine.stats();
    let disk_before = common::dir_bytes(dir.path());
    let targets: Vec<(Id, Id)> = (0..8192)
        .map(|_| {
            let d = rng.pick(&stored);
            (d.id, *rng.pick(&d.inputs))
        })
        .collect();
    for d in &stored {
        black_box(engine.document_blob(d.id).unwrap());
    }

    // Reads with no compaction running.
    let read = |i: u64| {
        let (d, n) = targets[(i as usize) % targets.len()];
        if i.is_multiple_of(2) {
            drop(black_box(engine.document_blob(d).unwrap()));
        } else {
            drop(black_box(engine.input(d, n).unwrap()));
        }
    };
    let idle = common::measure(budget, 1000, read);

    // The same reads while a compaction runs on another thread.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (report, busy) = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let r = engine.compact().expect("compact");
            done.store(true, Ordering::Release);
            r
        });
        let mut h = common::histogram();
        let started = Instant::now();
        let mut i = 0u64;
        while !done.load(Ordering::Acquire) {
            let t = Instant::now();
            read(i);
            h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
            i += 1;
        }
        let busy = Measured::from_histogram(&h, started.elapsed());
        (compactor.join().expect("compactor"), busy)
    });
    let after = engine.stats();
    let disk_after = common::dir_bytes(dir.path());

    let secs = report.elapsed.as_secs_f64();
    let mut t = Table::new(&["compaction", "figure"]);
    t.row(vec!["segments in".into(), report.segments_in.to_string()]);
    t.row(vec![
        "bytes in / out".into(),
        format!("{} / {}", common::bytes(report.bytes_in), common::bytes(report.bytes_out)),
    ]);
    t.row(vec!["records in / out".into(), format!("{} / {}", report.records_in, report.records_out)]);
    t.row(vec!["elapsed (with reads running)".into(), common::dur(report.elapsed)]);
    t.row(vec![
        "throughput, bytes read".into(),
        format!("{}/s", common::bytes((report.bytes_in as f64 / secs) as u64)),
    ]);
    t.row(vec![
        "throughput, bytes written".into(),
        format!("{}/s", common::bytes((report.bytes_out as f64 / secs) as u64)),
    ]);
    t.row(vec!["throughput, records in".into(), common::rate(report.records_in as f64 / secs)]);
    t.row(vec![
        "disk before (live / total)".into(),
        format!(
            "{} ({} live / {} in records)",
            common::bytes(disk_before),
            common::bytes(before.live_bytes),
            common::bytes(before.total_bytes)
        ),
    ]);
    let bound = after.live_bytes + engine.options().segment_bytes;
    t.row(vec![
        "disk after".into(),
        format!(
            "{} = {:.3}x live ({}); target <= 1.1x live + one segment = {}: {}",
            common::bytes(disk_after),
            disk_after as f64 / after.live_bytes as f64,
            common::bytes(after.live_bytes),
            common::bytes((after.live_bytes as f64 * 1.1) as u64 + engine.options().segment_bytes),
            if (disk_after as f64) <= after.live_bytes as f64 * 1.1 + engine.options().segment_bytes as f64 {
                "met"
            } else {
                "missed"
            }
        ),
    ]);
    let _ = bound;
    t.print();

    let mut t = Table::new(&["reads (blob / input, alternating)", "reads", "p50", "p99", "p99.9", "max", "reads/s"]);
    for (name, m) in [("idle", &idle), ("during compaction", &busy)] {
        t.row(vec![
            name.into(),
            m.ops.to_string(),
            common::dur(m.p50),
            common::dur(m.p99),
            common::dur(m.p999),
            common::dur(m.max),
            common::rate(m.per_sec()),
        ]);
    }
    t.print();
    println!(
        "Read p50 during compaction / idle: {:.2}x; p99: {:.2}x.\n",
        busy.p50.as_secs_f64() / idle.p50.as_secs_f64(),
        busy.p99.as_secs_f64() / idle.p99.as_secs_f64()
    );
}

fn main() {
    let test = common::test_mode();
    let report = std::env::var("STRATUM_REPORT").unwrap_or_default();
    let docs = if test { 50 } else { common::env_u64("STRATUM_DOCS", 5000) as usize };

    println!("machine: {}", common::machine());
    let started = Instant::now();
    let fixture = Fixture::load(docs);
    println!(
        "loaded {} documents + chains of 10/100/1000 inputs = {} records in {} (sync never)\n",
        fixture.docs.len(),
        fixture.records,
        common::dur(fixture.load)
    );
    let pool = Pool::new(5);

    if report != "only" {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .without_plots()
            .configure_from_args();
        bench_reads(&mut c, &fixture);
        bench_writes(&mut c, &pool);
        c.final_summary();
    }

    if report != "0" && !test {
        let budget = Duration::from_secs(2);
        println!("\n## Engine report\n\nmachine: {}\n", common::machine());
        lookup_report(&fixture, budget);
        blob_floor(&fixture, budget);
        drop(fixture);
        write_report(&pool, budget);
        compaction_report(docs, budget);
        println!("engine bench done in {}", common::dur(started.elapsed()));
    }
}
