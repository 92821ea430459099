//! Restart time: how long `Engine::open` takes to rebuild the index of a
//! store of 1 M records (the issue-6 workload: 1-20 KiB blobs, 10-100
//! inputs per document with outputs), by full scan and with hint files.
//!
//! `cargo bench --bench restart` (`STRATUM_RECORDS` to change the size).
//!
//! The store is written once with `sync never` and 64 MiB segments, its
//! sealed segments' hint files written with `Engine::write_hints` (as the
//! background compactor's ticker does), then
//! opened repeatedly in two shapes: as written (several sealed segments and
//! the active one) and after a compaction (one `merged.seg`). Each shape is
//! opened "as is" (with whatever hint files the engine wrote: `*.hint`
//! beside the segments) and "full scan" (every `*.hint` file removed first,
//! so every segment is read whole). Each open is timed with the page cache
//! warm, and cold: the store's files evicted from the page cache with
//! `posix_fadvise(DONTNEED)` first (only this store's files; nothing else
//! on the machine is touched). The fastest of three opens is reported.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rng, Table};
use stratum_io::{Engine, Options, SyncPolicy};

const TRIES: usize = 3;

fn options() -> Options {
    Options { sync: SyncPolicy::None, compaction: None, ..Options::default() }
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len()))
        })
        .collect();
    files.sort();
    files
}

fn hint_files(dir: &Path) -> Vec<String> {
    files(dir).into_iter().map(|(name, _)| name).filter(|n| n.ends_with(".hint")).collect()
}

fn remove_hints(dir: &Path) {
    for name in hint_files(dir) {
        std::fs::remove_file(dir.join(name)).expect("removing a hint file");
    }
}

/// Evicts the store's files from the page cache.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for (name, _) in files(dir) {
        if let Ok(file) = std::fs::File::open(dir.join(&name)) {
            let _ = file.sync_all();
            // SAFETY: a valid open descriptor; DONTNEED only drops clean cached pages.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

/// The IO floor under an open, without building any index: every byte of
/// the files ending in `ext` read in 1 MiB chunks (as a full scan reads
/// segments) and CRC-32'd. Fastest of `TRIES`, page cache warm.
fn read_floor(dir: &Path, ext: &str) -> Duration {
    use std::io::Read;
    let mut best = Duration::MAX;
    for _ in 0..TRIES {
        let started = Instant::now();
        let mut crc = 0u32;
        for (name, _) in files(dir).into_iter().filter(|(n, _)| n.ends_with(ext)) {
            let mut file = std::fs::File::open(dir.join(name)).expect("open");
            let mut buf = vec![0; 1 << 20];
            loop {
                let n = file.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                crc ^= crc32fast::hash(&buf[..n]);
            }
        }
        std::hint::black_box(crc);
        best = best.min(started.elapsed());
    }
    best
}

/// Opens the store `TRIES` times and returns the fastest open.
fn time_open(dir: &Path, records: u64, full_scan: bool, cold: bool) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..TRIES {
        if full_scan {
            remove_hints(dir);
        }
        if cold {
            evict(dir);
        }
        let started = Instant::now();
        let engine = Engine::open(dir, options()).expect("open");
        let elapsed = started.elapsed();
        assert_eq!(engine.stats().records, records, "reopened store has every record");
        drop(engine);
        best = best.min(elapsed);
    }
    best
}

fn main() {
    let test = common::test_mode();
    let target = if test { 20_000 } else { common::env_u64("STRATUM_RECORDS", 1_000_000) };
    println!("machine: {}", common::machine());

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path(), options()).expect("open");
    let mut rng = Rng::new(11);
    let started = Instant::now();
    let mut n = 0u64;
    while engine.stats().records < target {
        let spec = common::doc_spec(&mut rng, n, None);
        common::store(&engine, &spec);
        n += 1;
    }
    // Sealed segments get their hint files from the background compactor's
    // ticker, which this store does not run: write them as it would.
    let hinted = engine.write_hints().expect("write_hints");
    // Flushed first, so the durability mark a flush appends is counted.
    engine.flush().expect("flush");
    let stats = engine.stats();
    engine.close().expect("close");
    let mut records = stats.records;
    println!("hint files written for {hinted} sealed segments (Engine::write_hints)");
    println!(
        "wrote {} records ({} documents, {} inputs, {} outputs, {} of records) in {}\n",
        records,
        stats.documents,
        stats.inputs,
        stats.outputs,
        common::bytes(stats.total_bytes),
        common::dur(started.elapsed())
    );

    let mut t = Table::new(&[
        "store shape",
        "files",
        "hint files",
        "as is, warm",
        "full scan, warm",
        "as is, cold",
        "full scan, cold",
        "full scan / as is (warm)",
    ]);
    let mut summary = Vec::new();
    let mut floors = Vec::new();
    for shape in ["sealed segments + active", "after compaction (merged.seg)"] {
        if shape.starts_with("after") {
            // Compaction only runs when there is garbage: delete one document.
            let engine = Engine::open(dir.path(), options()).expect("open");
            let first = engine.document_ids_after(0, 1)[0];
            engine.delete_document(first).expect("delete");
            let report = engine.compact().expect("compact");
            assert!(report.segments_in > 0, "the compaction ran");
            engine.flush().expect("flush");
            records = engine.stats().records;
            engine.close().expect("close");
        }
        let listing = files(dir.path());
        // Let the engine write its hints (if it does so at open) before timing "as is".
        drop(Engine::open(dir.path(), options()).expect("open"));
        let hints = hint_files(dir.path());
        let as_is_warm = time_open(dir.path(), records, false, false);
        let as_is_cold = time_open(dir.path(), records, false, true);
        let scan_warm = time_open(dir.path(), records, true, false);
        let scan_cold = time_open(dir.path(), records, true, true);
        // Put the hints back for the floors (the next open does not write them).
        if !hints.is_empty() {
            let engine = Engine::open(dir.path(), options()).expect("open");
            engine.write_hints().expect("write_hints");
            engine.close().expect("close");
        }
        floors.push((shape, read_floor(dir.path(), ".seg"), read_floor(dir.path(), ".hint")));
        // Leave hints as the engine would have them for the next shape.
        drop(Engine::open(dir.path(), options()).expect("open"));
        t.row(vec![
            shape.to_string(),
            listing.iter().map(|(n, s)| format!("{n} {}", common::bytes(*s))).collect::<Vec<_>>().join(", "),
            if hints.is_empty() { "none".into() } else { hints.join(", ") },
            common::dur(as_is_warm),
            common::dur(scan_warm),
            common::dur(as_is_cold),
            common::dur(scan_cold),
            format!("{:.2}x", scan_warm.as_secs_f64() / as_is_warm.as_secs_f64()),
        ]);
        summary.push((shape, hints.len(), as_is_warm, scan_warm, as_is_cold, scan_cold));
    }
    println!("## Restart: open {records} records (fastest of {TRIES} opens)\n");
    t.print();
    let mut f =
        Table::new(&["store shape", "read + CRC every segment byte, no index", "read + CRC every hint byte, no index"]);
    for (shape, seg, hint) in &floors {
        f.row(vec![shape.to_string(), common::dur(*seg), common::dur(*hint)]);
    }
    println!("IO floors (page cache warm, fastest of {TRIES}): what an open costs before it builds any index entry\n");
    f.print();
    for (shape, hints, as_is, scan, as_is_cold, scan_cold) in summary {
        if hints == 0 {
            println!(
                "{shape}: no hint files (no sealed segment, or none written), so \"as is\" is a full scan too \
                 ({} warm, {} cold for {records} records).",
                common::dur(as_is),
                common::dur(as_is_cold)
            );
        } else {
            println!(
                "{shape}: with hints {} warm / {} cold, full scan {} warm / {} cold: hints are {:.1}x faster warm, \
                 {:.1}x cold (target >= 5x and < 1 s).",
                common::dur(as_is),
                common::dur(as_is_cold),
                common::dur(scan),
                common::dur(scan_cold),
                scan.as_secs_f64() / as_is.as_secs_f64(),
                scan_cold.as_secs_f64() / as_is_cold.as_secs_f64()
            );
        }
    }
}
