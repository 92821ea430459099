//! Measures the index's RAM per record: heap bytes held by an open engine
//! after loading N records, counted by a global allocator, divided by N.
//!
//! `cargo bench --bench index_memory` (1 M records by default; set
//! `STRATUM_RECORDS` to change). Prints one line per phase.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use stratum_io::{Columns, Engine, Options, SyncPolicy, Value};

struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counters are
// plain atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc`\'s contract, which `System` needs.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Per document: the document record, 5 inputs and 4 outputs: 10 records.
const INPUTS: u64 = 5;
const RECORDS_PER_DOCUMENT: u64 = 1 + INPUTS + (INPUTS - 1);

fn main() {
    let records: u64 = std::env::var("STRATUM_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let documents = records / RECORDS_PER_DOCUMENT;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { sync: SyncPolicy::None, compaction: None, ..Options::default() };

    let base = HEAP.load(Ordering::Relaxed);
    let engine = Engine::open(dir.path(), options).expect("open");
    let started = Instant::now();
    let columns: Columns = [("name".to_string(), "n".to_string()), ("level".to_string(), "2".to_string())].into();
    for d in 0..documents {
        let doc = engine.create_document(&[b'x'; 100], columns.clone()).expect("create");
        for i in 0..INPUTS {
            let input = engine.add_input(doc, &Value::IntList(vec![d as i64, i as i64])).expect("add");
            if i > 0 {
                engine.set_output(doc, input, &Value::Int(i as i64)).expect("output");
            }
        }
    }
    engine.flush().expect("flush");
    let loaded = HEAP.load(Ordering::Relaxed) - base;
    let n = documents * RECORDS_PER_DOCUMENT;
    println!(
        "loaded {n} records ({documents} documents, 2 columns each) in {:.2?}: index heap {} bytes = {:.1} bytes/record",
        started.elapsed(),
        loaded,
        loaded as f64 / n as f64
    );
    // The engine logs bookkeeping records of its own (id reservations,
    // durability marks, one more at close): the reopened store must hold
    // exactly what was written, once flushed.
    engine.flush().expect("flush");
    let written = engine.stats().records;
    assert!(written >= n, "every record is in the log");
    drop(engine);

    let base = HEAP.load(Ordering::Relaxed);
    let started = Instant::now();
    let engine = Engine::open(dir.path(), options).expect("reopen");
    let reopened = HEAP.load(Ordering::Relaxed) - base;
    println!(
        "reopened by full scan in {:.2?}: index heap {} bytes = {:.1} bytes/record",
        started.elapsed(),
        reopened,
        reopened as f64 / n as f64
    );
    assert_eq!(engine.stats().records, written);
}
