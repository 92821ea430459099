//! What every benchmark binary shares: the workload of issue 6, generated
//! deterministically (documents of 1-20 KiB HTML with 3-5 columns, 10-100
//! inputs each with an output, mixed value types), latency histograms and
//! plain-text tables.
//!
//! Each bench includes this file with `mod common;` and uses what it needs.

#![allow(dead_code)]

pub mod server;

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stratum_io::{Columns, Engine, Id, Value};

// ----- randomness -----------------------------------------------------------

/// SplitMix64: small, fast, deterministic; good enough to pick sizes and ids.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ----- the workload ---------------------------------------------------------

const WORDS: &[&str] = &[
    "array",
    "integer",
    "return",
    "indices",
    "target",
    "sum",
    "given",
    "string",
    "output",
    "input",
    "example",
    "constraints",
    "length",
    "each",
    "node",
    "tree",
    "graph",
    "value",
    "minimum",
    "maximum",
    "number",
    "order",
];

/// An HTML problem statement of exactly `len` bytes.
pub fn html(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 64);
    out.push_str("<html><body><h1>Problem</h1>\n");
    while out.len() < len {
        match rng.below(10) {
            0 => out.push_str("<p>"),
            1 => out.push_str("</p>\n"),
            2 => out.push_str("<code>nums[i] + nums[j] == target</code> "),
            _ => {
                out.push_str(rng.pick::<&str>(WORDS));
                out.push(' ');
            }
        }
    }
    out.truncate(len);
    out.into_bytes()
}

/// 3-5 metadata columns.
pub fn columns(rng: &mut Rng, n: u64) -> Columns {
    let mut c = Columns::new();
    c.insert("name".into(), format!("Problem {n}"));
    c.insert("category".into(), rng.pick(&["arrays", "graphs", "dp", "strings", "math"]).to_string());
    c.insert("version".into(), format!("1.{}", rng.below(10)));
    if rng.below(3) > 0 {
        c.insert("difficulty".into(), rng.pick(&["easy", "medium", "hard"]).to_string());
    }
    if rng.below(3) > 0 {
        c.insert("tags".into(), "two-pointers,hash-table,sorting".into());
    }
    c
}

/// A node value of a random type: int, double, string, list of ints, list
/// of strings or map, as test cases and expected outputs look.
pub fn value(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Int(rng.next_u64() as i64 >> 20),
        1 => Value::Double(rng.next_u64() as f64 / 7.0),
        2 => Value::Str((0..rng.range(2, 40)).map(|_| *rng.pick(WORDS)).collect::<Vec<_>>().join(" ")),
        3 => Value::IntList((0..rng.range(1, 100)).map(|_| (rng.next_u64() % 100_000) as i64 - 50_000).collect()),
        4 => Value::StrList((0..rng.range(1, 20)).map(|_| rng.pick(WORDS).to_string()).collect()),
        _ => Value::Map(
            (0..rng.range(1, 10)).map(|i| (format!("k{i}"), rng.pick(WORDS).to_string())).collect::<Columns>(),
        ),
    }
}

/// One document of the workload, before it is stored.
#[derive(Clone, Debug)]
pub struct DocSpec {
    pub blob: Vec<u8>,
    pub columns: Columns,
    /// Each input with its output.
    pub inputs: Vec<(Value, Value)>,
}

/// Document `n` of the workload, with `inputs` inputs (or 10-100 if `None`).
pub fn doc_spec(rng: &mut Rng, n: u64, inputs: Option<usize>) -> DocSpec {
    let blob_len = rng.range(1 << 10, 20 << 10) as usize;
    let inputs = inputs.unwrap_or_else(|| rng.range(10, 100) as usize);
    DocSpec {
        blob: html(rng, blob_len),
        columns: columns(rng, n),
        inputs: (0..inputs).map(|_| (value(rng), value(rng))).collect(),
    }
}

/// A stored document: its id and its inputs' ids in chain order.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: Id,
    pub inputs: Vec<Id>,
}

/// Stores `spec` in `engine`: the document, each input, each output.
pub fn store(engine: &Engine, spec: &DocSpec) -> Stored {
    let id = engine.create_document(&spec.blob, spec.columns.clone()).expect("create_document");
    let inputs = spec
        .inputs
        .iter()
        .map(|(input, output)| {
            let i = engine.add_input(id, input).expect("add_input");
            engine.set_output(id, i, output).expect("set_output");
            i
        })
        .collect();
    Stored { id, inputs }
}

/// A pool of ready-made blobs and values, so that write benchmarks time the
/// write and not the generation of its data.
pub struct Pool {
    pub blobs: Vec<Vec<u8>>,
    pub values: Vec<Value>,
    pub columns: Vec<Columns>,
}

impl Pool {
    pub fn new(seed: u64) -> Pool {
        let mut rng = Rng::new(seed);
        Pool {
            blobs: (0..64)
                .map(|_| {
                    let n = rng.range(1 << 10, 20 << 10) as usize;
                    html(&mut rng, n)
                })
                .collect(),
            values: (0..256).map(|_| value(&mut rng)).collect(),
            columns: (0..16).map(|n| columns(&mut rng, n)).collect(),
        }
    }

    pub fn mean_blob_len(&self) -> usize {
        self.blobs.iter().map(Vec::len).sum::<usize>() / self.blobs.len()
    }

    pub fn mean_value_len(&self) -> usize {
        self.values.iter().map(Value::encoded_len).sum::<usize>() / self.values.len()
    }
}

// ----- measuring ------------------------------------------------------------

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// Latencies and throughput of one measured operation.
#[derive(Clone, Debug)]
pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

impl Measured {
    pub fn from_histogram(h: &Histogram<u64>, elapsed: Duration) -> Measured {
        let q = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        Measured {
            ops: h.len(),
            elapsed,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_nanos(h.max()),
        }
    }

    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `op(i)` for `i = 0, 1, ...` for about `budget` (at least `min_ops`
/// times), timing each call.
pub fn measure(budget: Duration, min_ops: u64, mut op: impl FnMut(u64)) -> Measured {
    let mut h = histogram();
    let started = Instant::now();
    let mut i = 0u64;
    loop {
        let t = Instant::now();
        op(i);
        h.record(t.elapsed().as_nanos().max(1) as u64).expect("record");
        i += 1;
        if i >= min_ops && i.is_multiple_of(64) && started.elapsed() >= budget {
            break;
        }
    }
    Measured::from_histogram(&h, started.elapsed())
}

/// Runs `op(thread, i)` on `threads` threads for about `budget`, timing each
/// call; returns the merged latencies and the wall time.
pub fn measure_threads(threads: usize, budget: Duration, op: impl Fn(usize, u64) + Sync) -> Measured {
    let started = Instant::now();
    let merged = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                s.spawn(move || {
                    let mut h = histogram();
                    let mut i = 0u64;
                    loop {
                        let at = Instant::now();
                        op(t, i);
                        h.record(at.elapsed().as_nanos().max(1) as u64).expect("record");
                        i += 1;
                        if i.is_multiple_of(16) && started.elapsed() >= budget {
                            return h;
                        }
                    }
                })
            })
            .collect();
        let mut all = histogram();
        for handle in handles {
            all.add(handle.join().expect("bench thread")).expect("merge histograms");
        }
        all
    });
    Measured::from_histogram(&merged, started.elapsed())
}

// ----- reporting ------------------------------------------------------------

/// A duration as a short human figure: `812 ns`, `14.2 µs`, `3.10 ms`, `1.25 s`.
pub fn dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A rate as a short human figure: `1.23 M/s`, `45.6 k/s`, `789/s`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else if per_sec >= 1e4 {
        format!("{:.1} k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}/s")
    }
}

pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

/// A markdown table, printed with aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w - cell.chars().count();
                if i == 0 {
                    s.push_str(&format!(" {cell}{} |", " ".repeat(pad)));
                } else {
                    s.push_str(&format!(" {}{cell} |", " ".repeat(pad)));
                }
            }
            s
        };
        println!("{}", line(&self.header));
        let mut sep = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            if i == 0 {
                sep.push_str(&"-".repeat(w + 2));
            } else {
                sep.push_str(&format!("{}:", "-".repeat(w + 1)));
            }
            sep.push('|');
        }
        println!("{sep}");
        for row in &self.rows {
            println!("{}", line(row));
        }
        println!();
    }
}

/// Bytes on disk of every file in `dir` (not recursive).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// One line about the machine, for the top of every report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {cpu}, {:.1} GiB RAM", mem as f64 / (1 << 20) as f64)
}

/// True when cargo runs this bench as a test (`cargo test --benches`), where
/// it should only check that it works, quickly.
pub fn test_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The floor under every durable write: appending 4 KiB to a file and
/// `fdatasync`ing it, `n` times, in `dir`. Measured in the same run as the
/// figures it explains (on a shared VM, fsync latency swings by 10x or more
/// with other tenants' writes).
pub fn fsync_probe(dir: &Path, n: u64) -> Measured {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let block = [0x5a_u8; 4096];
    let mut h = histogram();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&block).expect("probe write");
        file.sync_data().expect("probe fdatasync");
        h.record(t.elapsed().as_nanos().max(1) as u64).expect("record");
    }
    let m = Measured::from_histogram(&h, started.elapsed());
    drop(file);
    let _ = std::fs::remove_file(path);
    m
}

pub fn fsync_line(m: &Measured) -> String {
    format!(
        "raw 4 KiB append + fdatasync on this disk, measured now: p50 {}, p99 {} ({} fsyncs)",
        dur(m.p50),
        dur(m.p99),
        rate(m.per_sec())
    )
}
