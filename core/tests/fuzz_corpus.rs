//! The fuzz targets' checks (`fuzz/checks.rs`) in CI: on every committed
//! corpus and regression input (`fuzz/corpus/TARGET/`,
//! `fuzz/regressions/TARGET/`), on seeds built here from real records,
//! hints and snapshots, and on a short run of random mutations of them
//! (`STRATUM_FUZZ_ITERATIONS` per target, 30 000 by default). Long runs with
//! libFuzzer: `scripts/fuzz TARGET SECONDS`.

#[allow(dead_code)] // each check is one target's
#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use stratum_core::{
    Columns, HintBuilder, KeyDir, Mutation, SEGMENT_HEADER_LEN, Salt, SegmentHeader, SegmentId, SegmentReplay, Value,
    encode_record, finish_batch, start_batch,
};

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("segment_tail", checks::segment_tail),
    ("scan_records", checks::scan_records),
    ("hint_file", checks::hint_file),
    ("index_snapshot", checks::index_snapshot),
];

/// The records of a small segment (after its header), salted with the
/// targets' salt: documents, inputs, outputs, and durability marks.
fn records(with_checkpoint: bool) -> Vec<u8> {
    let salt = Salt::new(checks::SALT);
    let mut out = Vec::new();
    let columns: Columns = [("name".to_string(), "sum".to_string())].into();
    let mut seq = 1;
    let mut put = |out: &mut Vec<u8>, id, m: Mutation<'_>| {
        encode_record(out, &salt, seq, id, &m);
        seq += 1;
    };
    if with_checkpoint {
        put(&mut out, 0, Mutation::Checkpoint { covers_from: SegmentId::FIRST, next_id: 100 });
    }
    put(&mut out, 1, Mutation::CreateDocument { columns: &columns, blob: b"<p>A + B</p>" });
    put(&mut out, 2, Mutation::PutInput { document: 1, value: &Value::IntList(vec![1, 2]) });
    put(&mut out, 2, Mutation::PutOutput { document: 1, value: &Value::Int(3) });
    put(&mut out, 4, Mutation::PutInput { document: 1, value: &Value::Int(9) });
    put(&mut out, 1, Mutation::SetChain { inputs: &[4, 2] });
    if !with_checkpoint {
        let upto = (SEGMENT_HEADER_LEN + out.len()) as u64;
        put(&mut out, 0, Mutation::Durable { upto });
        put(&mut out, 3, Mutation::PutInput { document: 1, value: &Value::Str("4 5".into()) });
        put(&mut out, 0, Mutation::ReserveIds { below: 1000 });
        let upto = (SEGMENT_HEADER_LEN + out.len()) as u64;
        put(&mut out, 0, Mutation::Durable { upto });
        // A batch frame after the last mark: an input and the chain order
        // that places it first.
        let frame = start_batch(&mut out, 100);
        encode_record(&mut out, &salt, 101, 5, &Mutation::PutInput { document: 1, value: &Value::Int(5) });
        encode_record(&mut out, &salt, 102, 1, &Mutation::SetChain { inputs: &[5, 4, 2] });
        finish_batch(&mut out, frame, &salt);
    }
    out
}

/// The whole segment file for `records`.
fn segment(records: &[u8]) -> Vec<u8> {
    let mut file = SegmentHeader { segment: SegmentId::FIRST, salt: Salt::new(checks::SALT) }.encode().to_vec();
    file.extend_from_slice(records);
    file
}

/// A target's input: the segment length, then the file.
fn with_len(len: usize, file: Vec<u8>) -> Vec<u8> {
    let mut input = (len as u64).to_le_bytes().to_vec();
    input.extend(file);
    input
}

/// Seeds for each target, built from real records, hints and snapshots.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let plain = records(false);
    match target {
        "segment_tail" => {
            let mut torn = plain.clone();
            torn.truncate(plain.len() - 30);
            let mut damaged = plain.clone();
            damaged[40] ^= 0x08;
            vec![plain, torn, damaged]
        }
        "scan_records" => vec![plain.clone(), segment(&plain)],
        "hint_file" => {
            let file = segment(&plain);
            let mut builder = HintBuilder::new(SegmentId::FIRST);
            let mut replay = SegmentReplay::new(SegmentId::FIRST, Salt::new(checks::SALT));
            let _ = replay.feed(&mut builder, &plain);
            vec![with_len(file.len(), builder.finish(file.len() as u64))]
        }
        "index_snapshot" => {
            let merged = records(true);
            let file = segment(&merged);
            let mut keydir = KeyDir::new();
            let mut replay = SegmentReplay::new(SegmentId::FIRST, Salt::new(checks::SALT));
            let _ = replay.feed(&mut keydir, &merged);
            let snapshot = keydir.snapshot(SegmentId::FIRST, file.len() as u64).expect("a merged segment's snapshot");
            vec![with_len(file.len(), snapshot)]
        }
        other => panic!("no seeds for {other}"),
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The committed inputs of `target`: its corpus and its regressions.
fn committed(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            inputs.push((path.clone(), std::fs::read(&path).expect("a corpus file")));
        }
    }
    inputs
}

#[test]
fn every_committed_input_and_seed_passes_its_check() {
    for (target, check) in TARGETS {
        let inputs = committed(target);
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} holds no inputs");
        for (path, input) in inputs {
            let caught = std::panic::catch_unwind(|| check(&input));
            assert!(caught.is_ok(), "{target} fails on {}", path.display());
        }
        for seed in seeds(target) {
            check(&seed);
        }
    }
}

/// A tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `input`: flipped bits, changed or removed
/// bytes, a cut, or the salt (the mark finder's key) spliced in.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        let last = input.len().saturating_sub(1);
        match rng.below(6) {
            0 if !input.is_empty() => input[at.min(last)] ^= 1 << rng.below(8),
            1 if !input.is_empty() => input[at.min(last)] = rng.next() as u8,
            2 => input.truncate(at),
            3 => input.splice(at..at, checks::SALT).for_each(drop),
            4 if at < input.len() => drop(input.drain(at..(at + rng.below(16)).min(input.len()))),
            _ => input.splice(at..at, (0..rng.below(32)).map(|_| rng.next() as u8)).for_each(drop),
        }
    }
}

#[test]
fn a_short_random_run_of_every_target_finds_nothing() {
    let iterations = std::env::var("STRATUM_FUZZ_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(30_000);
    for (target, check) in TARGETS {
        let mut bases = seeds(target);
        bases.extend(committed(target).into_iter().map(|(_, input)| input));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        for n in 0..iterations {
            let mut input = bases[rng.below(bases.len())].clone();
            mutate(&mut rng, &mut input);
            let caught = std::panic::catch_unwind(|| check(&input));
            assert!(caught.is_ok(), "{target} fails on random input {n}: {input:?}");
        }
    }
}

/// Writes the seeds into `fuzz/corpus/TARGET/` (what `scripts/fuzz` does
/// before a run): `cargo test -p stratum-core --test fuzz_corpus --
/// --ignored write_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus; run by scripts/fuzz"]
fn write_seeds() {
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("creating the corpus directory");
        for (n, seed) in seeds(target).into_iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n}")), seed).expect("writing a seed");
        }
    }
}
