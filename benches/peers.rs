//! Stratum next to the stores a user would pick instead, on the same
//! workload, in the same process and run: redb, fjall and sled (feature
//! `peers`), and RocksDB (feature `rocksdb`, which builds librocksdb from
//! C++ and takes long).
//!
//! ```sh
//! cargo bench --features peers --bench peers
//! cargo bench --features rocksdb --bench peers     # with RocksDB
//! ```
//!
//! Every store holds the same data (the issue-6 workload: documents of 1-20
//! KiB HTML with 3-5 columns, 10-100 inputs each with an output, mixed value
//! types; values stored as Stratum's value encoding, columns as an encoded
//! string map) in the most natural layout for it:
//!
//! - four tables: `docs` (id → blob), `columns` (id → columns), `inputs`
//!   and `outputs` ((document, input) → value), keys big-endian, so the
//!   chain of a document is a prefix scan over (document, *). The layout is
//!   written once ([`Peer`]) over each engine's primitives ([`Kv`]);
//! - redb: four tables, one write transaction per operation;
//! - fjall: four partitions in one keyspace, one atomic cross-partition
//!   batch per operation;
//! - sled and RocksDB: one keyspace, tables as a key tag `d`/`c`/`i`/`o`,
//!   one atomic batch per operation.
//!
//! Durability: "non-durable" is Stratum `sync never`, redb
//! `Durability::None`, fjall and sled without a persist/flush, RocksDB
//! `sync = false`; "durable" (fsync before the call returns) is Stratum
//! `sync always`, redb `Durability::Immediate`, fjall
//! `PersistMode::SyncData` on each batch, sled `flush()` after each write,
//! RocksDB `sync = true`.
//!
//! Prints one table per measure: operation × store, each peer's figure with
//! its ratio to Stratum's. `STRATUM_DOCS` sets the data set size (default
//! 3000 documents).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Measured, Pool, Rng, Stored, Table};
use stratum_io::{Columns, Engine, Id, Options, SyncPolicy, Value};

// ----- the common interface ---------------------------------------------------

trait Store: Sync + Send {
    fn create(&self, blob: &[u8], columns: &Columns) -> Id;
    fn add_input(&self, doc: Id, value: &Value) -> Id;
    fn set_output(&self, doc: Id, input: Id, value: &Value);
    fn blob(&self, doc: Id) -> Vec<u8>;
    fn columns(&self, doc: Id) -> Columns;
    fn input(&self, doc: Id, input: Id) -> Value;
    fn output(&self, doc: Id, input: Id) -> Value;
    fn chain(&self, doc: Id) -> Vec<(Id, Value)>;
    fn update_blob(&self, doc: Id, blob: &[u8]);
    fn update_input(&self, doc: Id, input: Id, value: &Value);
    fn delete(&self, doc: Id);
    /// Makes everything durable (before closing, or before measuring size).
    fn flush(&self);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Stratum,
    Redb,
    Fjall,
    Sled,
    #[cfg(feature = "rocksdb")]
    Rocksdb,
}

impl Kind {
    fn all() -> Vec<Kind> {
        #[allow(unused_mut)]
        let mut kinds = vec![Kind::Stratum, Kind::Redb, Kind::Fjall, Kind::Sled];
        #[cfg(feature = "rocksdb")]
        kinds.push(Kind::Rocksdb);
        kinds
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Stratum => "stratum",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::Sled => "sled",
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => "rocksdb",
        }
    }

    /// Opens the store in `dir`. Peers take ids from `ids` (Stratum assigns
    /// its own), so every store gets the same kind of keys.
    fn open(self, dir: &Path, durable: bool, ids: Arc<AtomicU64>) -> Box<dyn Store> {
        match self {
            Kind::Stratum => Box::new(StratumStore::open(dir, durable)),
            Kind::Redb => Box::new(Peer { kv: redb_kv::RedbKv::open(dir, durable), ids }),
            Kind::Fjall => Box::new(Peer { kv: fjall_kv::FjallKv::open(dir, durable), ids }),
            Kind::Sled => Box::new(Peer { kv: sled_kv::SledKv::open(dir, durable), ids }),
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => Box::new(Peer { kv: rocksdb_kv::RocksKv::open(dir, durable), ids }),
        }
    }
}

fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.encoded_len());
    value.encode(&mut out);
    out
}

fn decode_value(bytes: &[u8]) -> Value {
    Value::decode(bytes).expect("a stored value decodes")
}

fn encode_columns(columns: &Columns) -> Vec<u8> {
    encode_value(&Value::Map(columns.clone()))
}

fn decode_columns(bytes: &[u8]) -> Columns {
    match decode_value(bytes) {
        Value::Map(m) => m,
        other => panic!("columns decoded as {}", other.type_name()),
    }
}

fn id_at(key: &[u8], at: usize) -> Id {
    Id::from_be_bytes(key[at..at + 8].try_into().expect("8 bytes"))
}

// ----- Stratum ----------------------------------------------------------------

struct StratumStore(Engine);

impl StratumStore {
    fn open(dir: &Path, durable: bool) -> StratumStore {
        let sync = if durable { SyncPolicy::Always } else { SyncPolicy::None };
        StratumStore(Engine::open(dir, Options { sync, compaction: None, ..Options::default() }).expect("open stratum"))
    }
}

impl Store for StratumStore {
    fn create(&self, blob: &[u8], columns: &Columns) -> Id {
        self.0.create_document(blob, columns.clone()).unwrap()
    }
    fn add_input(&self, doc: Id, value: &Value) -> Id {
        self.0.add_input(doc, value).unwrap()
    }
    fn set_output(&self, doc: Id, input: Id, value: &Value) {
        self.0.set_output(doc, input, value).unwrap()
    }
    fn blob(&self, doc: Id) -> Vec<u8> {
        self.0.document_blob(doc).unwrap()
    }
    fn columns(&self, doc: Id) -> Columns {
        self.0.document_columns(doc).unwrap()
    }
    fn input(&self, doc: Id, input: Id) -> Value {
        self.0.input(doc, input).unwrap()
    }
    fn output(&self, doc: Id, input: Id) -> Value {
        self.0.output(doc, input).unwrap()
    }
    fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
        self.0.inputs(doc).unwrap()
    }
    fn update_blob(&self, doc: Id, blob: &[u8]) {
        self.0.update_blob(doc, blob).unwrap()
    }
    fn update_input(&self, doc: Id, input: Id, value: &Value) {
        self.0.update_input(doc, input, value).unwrap()
    }
    fn delete(&self, doc: Id) {
        self.0.delete_document(doc).unwrap()
    }
    fn flush(&self) {
        self.0.flush().unwrap()
    }
}

// ----- the peers: one layout over four tables ---------------------------------

/// The four tables every peer keeps ("spaces", not to mix them up with the
/// report's tables): separate tables (redb) or partitions (fjall), or a tag
/// byte in front of the key (sled, RocksDB).
#[derive(Clone, Copy, Debug)]
enum Space {
    Docs,
    Columns,
    Inputs,
    Outputs,
}

impl Space {
    const ALL: [Space; 4] = [Space::Docs, Space::Columns, Space::Inputs, Space::Outputs];

    fn name(self) -> &'static str {
        match self {
            Space::Docs => "docs",
            Space::Columns => "columns",
            Space::Inputs => "inputs",
            Space::Outputs => "outputs",
        }
    }

    /// The key prefix of this space in a single-keyspace store.
    fn tag(self) -> u8 {
        match self {
            Space::Docs => b'd',
            Space::Columns => b'c',
            Space::Inputs => b'i',
            Space::Outputs => b'o',
        }
    }

    fn tagged(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + key.len());
        k.push(self.tag());
        k.extend_from_slice(key);
        k
    }
}

/// One change of an atomic write.
enum Op<'a> {
    Put(Space, Vec<u8>, &'a [u8]),
    Delete(Space, Vec<u8>),
}

/// What a peer engine provides: the key-value primitives the shared layout
/// ([`Peer`]) is written in.
trait Kv: Sync + Send {
    /// The value under `key`, which must be present.
    fn get(&self, space: Space, key: &[u8]) -> Vec<u8>;
    /// Calls `f` with every entry of `space` whose key starts with `prefix`,
    /// in key order.
    fn scan(&self, space: Space, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8]));
    /// Applies `ops` atomically: one transaction or batch, synced before
    /// returning if the store was opened durable.
    fn write(&self, ops: Vec<Op<'_>>);
    /// Makes everything durable.
    fn flush(&self);
}

/// The document layout on a peer: blobs and columns keyed by big-endian
/// document id, inputs and outputs by (document, input), a chain as a
/// prefix scan over (document, *). Ids come from a shared counter.
struct Peer<K> {
    kv: K,
    ids: Arc<AtomicU64>,
}

fn be(id: Id) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn pair(doc: Id, input: Id) -> Vec<u8> {
    [doc.to_be_bytes(), input.to_be_bytes()].concat()
}

impl<K: Kv> Store for Peer<K> {
    fn create(&self, blob: &[u8], columns: &Columns) -> Id {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let columns = encode_columns(columns);
        self.kv.write(vec![Op::Put(Space::Docs, be(id), blob), Op::Put(Space::Columns, be(id), &columns)]);
        id
    }
    fn add_input(&self, doc: Id, value: &Value) -> Id {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        self.kv.write(vec![Op::Put(Space::Inputs, pair(doc, id), &encode_value(value))]);
        id
    }
    fn set_output(&self, doc: Id, input: Id, value: &Value) {
        self.kv.write(vec![Op::Put(Space::Outputs, pair(doc, input), &encode_value(value))]);
    }
    fn blob(&self, doc: Id) -> Vec<u8> {
        self.kv.get(Space::Docs, &be(doc))
    }
    fn columns(&self, doc: Id) -> Columns {
        decode_columns(&self.kv.get(Space::Columns, &be(doc)))
    }
    fn input(&self, doc: Id, input: Id) -> Value {
        decode_value(&self.kv.get(Space::Inputs, &pair(doc, input)))
    }
    fn output(&self, doc: Id, input: Id) -> Value {
        decode_value(&self.kv.get(Space::Outputs, &pair(doc, input)))
    }
    fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
        let mut chain = Vec::new();
        self.kv.scan(Space::Inputs, &be(doc), &mut |k, v| chain.push((id_at(k, 8), decode_value(v))));
        chain
    }
    fn update_blob(&self, doc: Id, blob: &[u8]) {
        self.kv.write(vec![Op::Put(Space::Docs, be(doc), blob)]);
    }
    fn update_input(&self, doc: Id, input: Id, value: &Value) {
        self.kv.write(vec![Op::Put(Space::Inputs, pair(doc, input), &encode_value(value))]);
    }
    fn delete(&self, doc: Id) {
        let mut ops = vec![Op::Delete(Space::Docs, be(doc)), Op::Delete(Space::Columns, be(doc))];
        for space in [Space::Inputs, Space::Outputs] {
            self.kv.scan(space, &be(doc), &mut |k, _| ops.push(Op::Delete(space, k.to_vec())));
        }
        self.kv.write(ops);
    }
    fn flush(&self) {
        self.kv.flush()
    }
}

// ----- redb -------------------------------------------------------------------

mod redb_kv {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    fn definition(space: Space) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(space.name())
    }

    /// Four tables in one database file; one write transaction per write.
    pub struct RedbKv {
        db: Database,
        durable: bool,
    }

    impl RedbKv {
        pub fn open(dir: &Path, durable: bool) -> RedbKv {
            let kv = RedbKv { db: Database::create(dir.join("store.redb")).expect("open redb"), durable };
            let tx = kv.db.begin_write().unwrap();
            for space in Space::ALL {
                tx.open_table(definition(space)).unwrap();
            }
            tx.commit().unwrap();
            kv
        }
    }

    impl Kv for RedbKv {
        fn get(&self, space: Space, key: &[u8]) -> Vec<u8> {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(definition(space)).unwrap();
            t.get(key).unwrap().expect("present").value().to_vec()
        }
        fn scan(&self, space: Space, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(definition(space)).unwrap();
            for entry in t.range(prefix..).unwrap() {
                let (k, v) = entry.unwrap();
                if !k.value().starts_with(prefix) {
                    break;
                }
                f(k.value(), v.value());
            }
        }
        fn write(&self, ops: Vec<Op<'_>>) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(if self.durable { Durability::Immediate } else { Durability::None }).unwrap();
            for op in &ops {
                match op {
                    Op::Put(space, k, v) => {
                        tx.open_table(definition(*space)).unwrap().insert(k.as_slice(), *v).unwrap();
                    }
                    Op::Delete(space, k) => {
                        tx.open_table(definition(*space)).unwrap().remove(k.as_slice()).unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }
        fn flush(&self) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            tx.commit().unwrap();
        }
    }
}

// ----- fjall ------------------------------------------------------------------

mod fjall_kv {
    use super::*;
    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    /// Four partitions in one keyspace; one atomic cross-partition batch per write.
    pub struct FjallKv {
        keyspace: Keyspace,
        partitions: [PartitionHandle; 4],
        durable: bool,
    }

    impl FjallKv {
        pub fn open(dir: &Path, durable: bool) -> FjallKv {
            let keyspace = Config::new(dir.join("fjall")).open().expect("open fjall");
            let partitions = Space::ALL
                .map(|space| keyspace.open_partition(space.name(), PartitionCreateOptions::default()).unwrap());
            FjallKv { keyspace, partitions, durable }
        }

        fn partition(&self, space: Space) -> &PartitionHandle {
            &self.partitions[space as usize]
        }
    }

    impl Kv for FjallKv {
        fn get(&self, space: Space, key: &[u8]) -> Vec<u8> {
            self.partition(space).get(key).unwrap().expect("present").to_vec()
        }
        fn scan(&self, space: Space, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
            for entry in self.partition(space).prefix(prefix) {
                let (k, v) = entry.unwrap();
                f(&k, &v);
            }
        }
        fn write(&self, ops: Vec<Op<'_>>) {
            let mut batch = self.keyspace.batch().durability(self.durable.then_some(PersistMode::SyncData));
            for op in ops {
                match op {
                    Op::Put(space, k, v) => batch.insert(self.partition(space), k, v),
                    Op::Delete(space, k) => batch.remove(self.partition(space), k),
                }
            }
            batch.commit().unwrap();
        }
        fn flush(&self) {
            self.keyspace.persist(PersistMode::SyncAll).unwrap();
        }
    }
}

// ----- sled -------------------------------------------------------------------

mod sled_kv {
    use super::*;

    /// One keyspace, tables as key tags; one atomic batch per write, then
    /// `flush()` if durable.
    pub struct SledKv {
        db: sled::Db,
        durable: bool,
    }

    impl SledKv {
        pub fn open(dir: &Path, durable: bool) -> SledKv {
            SledKv { db: sled::open(dir.join("sled")).expect("open sled"), durable }
        }
    }

    impl Kv for SledKv {
        fn get(&self, space: Space, key: &[u8]) -> Vec<u8> {
            self.db.get(space.tagged(key)).unwrap().expect("present").to_vec()
        }
        fn scan(&self, space: Space, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
            for entry in self.db.scan_prefix(space.tagged(prefix)) {
                let (k, v) = entry.unwrap();
                f(&k[1..], &v);
            }
        }
        fn write(&self, ops: Vec<Op<'_>>) {
            let mut batch = sled::Batch::default();
            for op in ops {
                match op {
                    Op::Put(space, k, v) => batch.insert(space.tagged(&k), v),
                    Op::Delete(space, k) => batch.remove(space.tagged(&k)),
                }
            }
            self.db.apply_batch(batch).unwrap();
            if self.durable {
                self.db.flush().unwrap();
            }
        }
        fn flush(&self) {
            self.db.flush().unwrap();
        }
    }
}

// ----- RocksDB ----------------------------------------------------------------

#[cfg(feature = "rocksdb")]
mod rocksdb_kv {
    use super::*;
    use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};

    /// One keyspace, tables as key tags; one `WriteBatch` per write.
    pub struct RocksKv {
        db: DB,
        durable: bool,
    }

    impl RocksKv {
        pub fn open(dir: &Path, durable: bool) -> RocksKv {
            RocksKv { db: DB::open_default(dir.join("rocksdb")).expect("open rocksdb"), durable }
        }
    }

    impl Kv for RocksKv {
        fn get(&self, space: Space, key: &[u8]) -> Vec<u8> {
            self.db.get(space.tagged(key)).unwrap().expect("present")
        }
        fn scan(&self, space: Space, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
            let prefix = space.tagged(prefix);
            for entry in self.db.iterator(IteratorMode::From(&prefix, Direction::Forward)) {
                let (k, v) = entry.unwrap();
                if !k.starts_with(&prefix) {
                    break;
                }
                f(&k[1..], &v);
            }
        }
        fn write(&self, ops: Vec<Op<'_>>) {
            let mut batch = WriteBatch::default();
            for op in ops {
                match op {
                    Op::Put(space, k, v) => batch.put(space.tagged(&k), v),
                    Op::Delete(space, k) => batch.delete(space.tagged(&k)),
                }
            }
            let mut options = WriteOptions::default();
            options.set_sync(self.durable);
            self.db.write_opt(batch, &options).unwrap();
        }
        fn flush(&self) {
            self.db.flush().unwrap();
            self.db.flush_wal(true).unwrap();
        }
    }
}

// ----- the run ----------------------------------------------------------------

/// One store under test, with its data set.
struct Subject {
    kind: Kind,
    dir: tempfile::TempDir,
    ids: Arc<AtomicU64>,
    store: Option<Box<dyn Store>>,
    docs: Vec<Stored>,
    chains: Vec<Stored>,
}

impl Subject {
    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("open")
    }

    fn reopen(&mut self, durable: bool) -> Duration {
        if let Some(store) = self.store.take() {
            store.flush();
            drop(store);
        }
        let started = Instant::now();
        self.store = Some(self.kind.open(self.dir.path(), durable, self.ids.clone()));
        started.elapsed()
    }
}

fn store_spec(store: &dyn Store, spec: &common::DocSpec) -> Stored {
    let id = store.create(&spec.blob, &spec.columns);
    let inputs = spec
        .inputs
        .iter()
        .map(|(input, output)| {
            let i = store.add_input(id, input);
            store.set_output(id, i, output);
            i
        })
        .collect();
    Stored { id, inputs }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => total += dir_bytes(&entry.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

/// Rows of one results table: for each operation, one figure per store.
struct Results {
    kinds: Vec<Kind>,
    rows: Vec<(String, Vec<Option<Measured>>)>,
}

impl Results {
    fn new(kinds: &[Kind]) -> Results {
        Results { kinds: kinds.to_vec(), rows: Vec::new() }
    }

    /// Prints ops/s with each peer's ratio to Stratum (higher is faster),
    /// then p50 latency with each peer's ratio to Stratum (higher is slower).
    fn print(&self, title: &str, unit: &str) {
        self.print_with(title, unit, true)
    }

    fn print_with(&self, title: &str, unit: &str, latency: bool) {
        let header: Vec<&str> = std::iter::once("operation").chain(self.kinds.iter().map(|k| k.name())).collect();
        println!("### {title}: {unit} (peer / stratum; above 1.00x the peer is faster)\n");
        let mut t = Table::new(&header);
        for (op, figures) in &self.rows {
            let base = figures[0].as_ref().map(Measured::per_sec);
            let mut row = vec![op.clone()];
            for (i, m) in figures.iter().enumerate() {
                row.push(match (m, base) {
                    (Some(m), _) if i == 0 => common::rate(m.per_sec()),
                    (Some(m), Some(b)) => format!("{} ({:.2}x)", common::rate(m.per_sec()), m.per_sec() / b),
                    _ => "-".into(),
                });
            }
            t.row(row);
        }
        t.print();
        if !latency {
            return;
        }
        println!("### {title}: p50 latency (peer / stratum; above 1.00x the peer is slower)\n");
        let mut t = Table::new(&header);
        for (op, figures) in &self.rows {
            let base = figures[0].as_ref().map(|m| m.p50.as_secs_f64());
            let mut row = vec![op.clone()];
            for (i, m) in figures.iter().enumerate() {
                row.push(match (m, base) {
                    (Some(m), _) if i == 0 => format!("{} (p99 {})", common::dur(m.p50), common::dur(m.p99)),
                    (Some(m), Some(b)) => format!("{} ({:.2}x)", common::dur(m.p50), m.p50.as_secs_f64() / b),
                    _ => "-".into(),
                });
            }
            t.row(row);
        }
        t.print();
    }
}

/// Best of `rounds` measurements, taken round-robin over the stores so
/// every store sees the same machine noise.
fn read_op(
    subjects: &[Subject],
    rounds: usize,
    budget: Duration,
    op: impl Fn(&Subject, u64) + Sync,
) -> Vec<Option<Measured>> {
    let mut best: Vec<Option<Measured>> = vec![None; subjects.len()];
    for _ in 0..rounds {
        for (i, s) in subjects.iter().enumerate() {
            let m = common::measure(budget, 100, |n| op(s, n));
            if best[i].as_ref().is_none_or(|b| m.per_sec() > b.per_sec()) {
                best[i] = Some(m);
            }
        }
    }
    best
}

/// Runs `op(i)` for `i in 0..n`, timing each call.
fn counted(n: u64, mut op: impl FnMut(u64)) -> Measured {
    let mut h = common::histogram();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        op(i);
        h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    Measured::from_histogram(&h, started.elapsed())
}

/// The write operations, `n` of each, one writer.
fn write_ops(subjects: &mut [Subject], results: &mut Results, n: u64, pool: &Pool, seed: u64) {
    // Documents to delete: made first, untimed, 10 inputs with outputs each.
    let victims: Vec<Vec<Id>> = subjects
        .iter()
        .map(|s| {
            (0..n)
                .map(|i| {
                    let mut rng = Rng::new(seed + i);
                    let mut spec = common::doc_spec(&mut rng, i, Some(10));
                    spec.blob = pool.blobs[(i % 64) as usize].clone();
                    store_spec(s.store(), &spec).id
                })
                .collect()
        })
        .collect();
    let mut rows: Vec<(String, Vec<Option<Measured>>)> =
        ["create", "add input", "set output", "update blob", "update input", "delete"]
            .iter()
            .map(|op| (op.to_string(), Vec::new()))
            .collect();
    for (s, victims) in subjects.iter().zip(&victims) {
        let store = s.store();
        let docs = &s.docs;
        let p = |i: u64| (i as usize) % docs.len();
        let v = |i: u64| &pool.values[(i as usize + seed as usize) % 256];
        let created: Vec<Id> = Vec::with_capacity(n as usize);
        let created = std::cell::RefCell::new(created);
        rows[0].1.push(Some(counted(n, |i| {
            let id = store.create(&pool.blobs[(i % 64) as usize], &pool.columns[(i % 16) as usize]);
            created.borrow_mut().push(id);
        })));
        let added = std::cell::RefCell::new(Vec::with_capacity(n as usize));
        rows[1].1.push(Some(counted(n, |i| {
            let d = docs[p(i)].id;
            added.borrow_mut().push((d, store.add_input(d, v(i))));
        })));
        let added = added.into_inner();
        rows[2].1.push(Some(counted(n, |i| {
            let (d, input) = added[i as usize];
            store.set_output(d, input, v(i + 1));
        })));
        rows[3].1.push(Some(counted(n, |i| store.update_blob(docs[p(i)].id, &pool.blobs[((i + 7) % 64) as usize]))));
        rows[4].1.push(Some(counted(n, |i| {
            let d = &docs[p(i * 7)];
            store.update_input(d.id, d.inputs[(i as usize) % d.inputs.len()], v(i + 3));
        })));
        rows[5].1.push(Some(counted(n, |i| store.delete(victims[i as usize]))));
    }
    results.rows.extend(rows);
}

/// Writers concurrent writers for `budget`, each creating a document then
/// adding 10 inputs with outputs to it, over and over. One figure per call.
fn concurrent_writes(s: &Subject, writers: usize, budget: Duration, pool: &Pool) -> Measured {
    let store = s.store();
    let states: Vec<std::sync::Mutex<(Id, u64)>> = (0..writers).map(|_| std::sync::Mutex::new((0, 0))).collect();
    common::measure_threads(writers, budget, |t, i| {
        let mut st = states[t].lock().unwrap();
        let seed = (i * 31 + t as u64) as usize;
        if st.1.is_multiple_of(11) {
            st.0 = store.create(&pool.blobs[seed % 64], &pool.columns[seed % 16]);
        } else {
            let input = store.add_input(st.0, &pool.values[seed % 256]);
            store.set_output(st.0, input, &pool.values[(seed + 7) % 256]);
        }
        st.1 += 1;
    })
}

fn main() {
    let test = common::test_mode();
    let docs = if test { 30 } else { common::env_u64("STRATUM_DOCS", 3000) as usize };
    let budget = if test { Duration::from_millis(20) } else { Duration::from_millis(700) };
    let rounds = if test { 1 } else { 3 };
    let kinds = Kind::all();
    println!("machine: {}", common::machine());
    println!("stores: {}\n", kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "));
    let started = Instant::now();
    let pool = Pool::new(9);

    // Load, non-durable, the same documents into every store.
    let mut subjects: Vec<Subject> = kinds
        .iter()
        .map(|&kind| Subject {
            kind,
            dir: tempfile::tempdir().expect("tempdir"),
            ids: Arc::new(AtomicU64::new(1)),
            store: None,
            docs: Vec::new(),
            chains: Vec::new(),
        })
        .collect();
    let mut load = Results::new(&kinds);
    let mut loaded = Vec::new();
    let mut records = 0;
    for s in subjects.iter_mut() {
        s.reopen(false);
        let mut rng = Rng::new(21);
        let specs: Vec<common::DocSpec> = (0..docs).map(|n| common::doc_spec(&mut rng, n as u64, None)).collect();
        let chain_specs: Vec<common::DocSpec> =
            [10, 100, 1000].iter().map(|&n| common::doc_spec(&mut rng, 1_000_000 + n as u64, Some(n))).collect();
        records = specs.iter().chain(&chain_specs).map(|d| 1 + 2 * d.inputs.len() as u64).sum::<u64>();
        let t = Instant::now();
        s.docs = specs.iter().map(|spec| store_spec(s.store(), spec)).collect();
        s.chains = chain_specs.iter().map(|spec| store_spec(s.store(), spec)).collect();
        s.store().flush();
        let elapsed = t.elapsed();
        loaded.push(Some(Measured {
            ops: records,
            elapsed,
            p50: elapsed / records as u32,
            p99: Duration::ZERO,
            p999: Duration::ZERO,
            max: Duration::ZERO,
        }));
    }
    load.rows.push((format!("load {docs} documents ({records} records, writes/s)"), loaded));
    let sizes: Vec<u64> = subjects.iter().map(|s| dir_bytes(s.dir.path())).collect();

    // Reads, page cache warm.
    let mut rng = Rng::new(22);
    let targets: Vec<(usize, usize)> = (0..8192)
        .map(|_| {
            let d = rng.below(docs);
            (d, rng.below(subjects[0].docs[d].inputs.len()))
        })
        .collect();
    for s in &subjects {
        for d in &s.docs {
            std::hint::black_box(s.store().blob(d.id));
        }
    }
    // Let the peers' background work after the load (fjall's flushes and
    // compactions, sled's flusher) settle before timing reads.
    if !test {
        std::thread::sleep(Duration::from_secs(5));
    }
    let at = |s: &Subject, n: u64| {
        let (d, i) = targets[(n as usize) % targets.len()];
        (s.docs[d].id, s.docs[d].inputs[i])
    };
    let mut reads = Results::new(&kinds);
    reads.rows.push((
        "blob".into(),
        read_op(&subjects, rounds, budget, |s, n| drop(std::hint::black_box(s.store().blob(at(s, n).0)))),
    ));
    reads.rows.push((
        "columns".into(),
        read_op(&subjects, rounds, budget, |s, n| drop(std::hint::black_box(s.store().columns(at(s, n).0)))),
    ));
    reads.rows.push((
        "input".into(),
        read_op(&subjects, rounds, budget, |s, n| {
            let (d, i) = at(s, n);
            drop(std::hint::black_box(s.store().input(d, i)))
        }),
    ));
    reads.rows.push((
        "output".into(),
        read_op(&subjects, rounds, budget, |s, n| {
            let (d, i) = at(s, n);
            drop(std::hint::black_box(s.store().output(d, i)))
        }),
    ));
    for (c, len) in [10, 100, 1000].iter().enumerate() {
        reads.rows.push((
            format!("chain of {len} inputs"),
            read_op(&subjects, rounds, budget, |s, _| drop(std::hint::black_box(s.store().chain(s.chains[c].id)))),
        ));
    }
    let mut two = Vec::new();
    for s in &subjects {
        two.push(Some(common::measure_threads(2, budget, |t, n| {
            drop(std::hint::black_box(s.store().blob(at(s, n * 2 + t as u64).0)))
        })));
    }
    reads.rows.push(("blob, 2 threads".into(), two));

    // Writes, non-durable, one writer.
    let n = if test { 20 } else { 2000 };
    let mut fast = Results::new(&kinds);
    write_ops(&mut subjects, &mut fast, n, &pool, 100);

    // Reopen durable (timed, fastest of 3: a restart of each store), then durable writes.
    let reopened: Vec<Duration> =
        subjects.iter_mut().map(|s| (0..3).map(|_| s.reopen(true)).min().expect("3 opens")).collect();
    let n = if test { 10 } else { 300 };
    let probe_before = common::fsync_probe(subjects[0].dir.path(), if test { 10 } else { 200 });
    let mut durable = Results::new(&kinds);
    write_ops(&mut subjects, &mut durable, n, &pool, 200);
    let budget32 = if test { Duration::from_millis(50) } else { Duration::from_secs(2) };
    for writers in [1, 32] {
        let row = subjects.iter().map(|s| Some(concurrent_writes(s, writers, budget32, &pool))).collect();
        durable.rows.push((format!("mixed writes, {writers} writer{}", if writers > 1 { "s" } else { "" }), row));
    }
    let probe_after = common::fsync_probe(subjects[0].dir.path(), if test { 10 } else { 200 });

    println!(
        "\n## Peers: same workload, same run ({docs} documents of 1-20 KiB HTML, 10-100 inputs each with outputs)\n"
    );
    println!("machine: {}\n", common::machine());
    load.print_with("Load (non-durable, one writer)", "records written per second", false);
    let mut t =
        Table::new(&std::iter::once("disk after load").chain(kinds.iter().map(|k| k.name())).collect::<Vec<_>>());
    t.row(
        std::iter::once("bytes".to_string())
            .chain(sizes.iter().map(|&b| format!("{} ({:.2}x)", common::bytes(b), b as f64 / sizes[0] as f64)))
            .collect(),
    );
    t.print();
    reads.print("Reads (page cache warm)", "operations per second");
    fast.print("Writes, non-durable, one writer", "operations per second");
    println!("Before the durable writes, {}.", common::fsync_line(&probe_before));
    println!("After them, {}.\n", common::fsync_line(&probe_after));
    println!(
        "sled's durable writes call `flush()`, which on Linux uses `sync_file_range`: no device cache \
         flush and no journal commit, so it is not an fsync and its durable figures are not like for like.\n"
    );
    durable.print("Writes, durable (fsync before returning)", "operations per second");
    println!("### Restart: time to open each store after the non-durable writes (fastest of 3; peer / stratum)\n");
    let mut t = Table::new(&std::iter::once("open").chain(kinds.iter().map(|k| k.name())).collect::<Vec<_>>());
    t.row(
        std::iter::once("time".to_string())
            .chain(
                reopened
                    .iter()
                    .map(|d| format!("{} ({:.2}x)", common::dur(*d), d.as_secs_f64() / reopened[0].as_secs_f64())),
            )
            .collect(),
    );
    t.print();

    let blob = &reads.rows[0].1;
    let stratum = blob[0].as_ref().map(Measured::per_sec).unwrap_or(0.0);
    if let Some((best, rate)) = kinds
        .iter()
        .zip(blob)
        .skip(1)
        .filter_map(|(k, m)| Some((k.name(), m.as_ref()?.per_sec())))
        .max_by(|a, b| a.1.total_cmp(&b.1))
    {
        println!(
            "Cached blob read: Stratum {} vs best peer {best} {}: {:.2}x (target > 1x, aiming at 2x).",
            common::rate(stratum),
            common::rate(rate),
            stratum / rate
        );
    }
    for mut s in subjects {
        if let Some(store) = s.store.take() {
            store.flush();
        }
    }
    println!("peers bench done in {}", common::dur(started.elapsed()));
}
