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
//! - redb: four tables, `docs` (id → blob), `columns` (id → columns),
//!   `inputs` and `outputs` ((document, input) → value); one write
//!   transaction per operation;
//! - fjall: the same four partitions in one keyspace, keys big-endian, one
//!   atomic cross-partition batch per operation;
//! - sled and RocksDB: one keyspace, keys tagged `d`/`c`/`i`/`o` + big-endian
//!   ids, one atomic batch per operation;
//! - the chain of a document is a prefix/range scan over (document, *).
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
            Kind::Redb => Box::new(redb_store::RedbStore::open(dir, durable, ids)),
            Kind::Fjall => Box::new(fjall_store::FjallStore::open(dir, durable, ids)),
            Kind::Sled => Box::new(sled_store::SledStore::open(dir, durable, ids)),
            #[cfg(feature = "rocksdb")]
            Kind::Rocksdb => Box::new(rocksdb_store::RocksStore::open(dir, durable, ids)),
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

fn be(id: Id) -> [u8; 8] {
    id.to_be_bytes()
}

fn pair(doc: Id, input: Id) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&doc.to_be_bytes());
    k[8..].copy_from_slice(&input.to_be_bytes());
    k
}

/// `tag` + big-endian ids: the keys of the single-keyspace layouts.
fn tagged(tag: u8, ids: &[Id]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 * ids.len());
    k.push(tag);
    for id in ids {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}

fn id_at(key: &[u8], at: usize) -> Id {
    Id::from_be_bytes(key[at..at + 8].try_into().expect("8 bytes"))
}

// ----- Stratum ----------------------------------------------------------------

struct StratumStore(Engine);

impl StratumStore {
    fn open(dir: &Path, durable: bool) -> StratumStore {
        let sync = if durable { SyncPolicy::Always } else { SyncPolicy::Never };
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

// ----- redb -------------------------------------------------------------------

mod redb_store {
    use super::*;
    use redb::{Database, Durability, ReadableDatabase, TableDefinition};

    const DOCS: TableDefinition<u64, &[u8]> = TableDefinition::new("docs");
    const COLUMNS: TableDefinition<u64, &[u8]> = TableDefinition::new("columns");
    const INPUTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("inputs");
    const OUTPUTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("outputs");

    pub struct RedbStore {
        db: Database,
        durable: bool,
        ids: Arc<AtomicU64>,
    }

    impl RedbStore {
        pub fn open(dir: &Path, durable: bool, ids: Arc<AtomicU64>) -> RedbStore {
            let db = Database::create(dir.join("store.redb")).expect("open redb");
            let store = RedbStore { db, durable, ids };
            store.write(|tx| {
                tx.open_table(DOCS).unwrap();
                tx.open_table(COLUMNS).unwrap();
                tx.open_table(INPUTS).unwrap();
                tx.open_table(OUTPUTS).unwrap();
            });
            store
        }

        fn write<T>(&self, f: impl FnOnce(&redb::WriteTransaction) -> T) -> T {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(if self.durable { Durability::Immediate } else { Durability::None }).unwrap();
            let out = f(&tx);
            tx.commit().unwrap();
            out
        }

        fn get<K: redb::Key + 'static>(&self, table: TableDefinition<K, &[u8]>, key: K::SelfType<'_>) -> Vec<u8> {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(table).unwrap();
            t.get(key).unwrap().expect("present").value().to_vec()
        }
    }

    impl Store for RedbStore {
        fn create(&self, blob: &[u8], columns: &Columns) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let cols = encode_columns(columns);
            self.write(|tx| {
                tx.open_table(DOCS).unwrap().insert(id, blob).unwrap();
                tx.open_table(COLUMNS).unwrap().insert(id, cols.as_slice()).unwrap();
            });
            id
        }
        fn add_input(&self, doc: Id, value: &Value) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let v = encode_value(value);
            self.write(|tx| {
                tx.open_table(INPUTS).unwrap().insert((doc, id), v.as_slice()).unwrap();
            });
            id
        }
        fn set_output(&self, doc: Id, input: Id, value: &Value) {
            let v = encode_value(value);
            self.write(|tx| {
                tx.open_table(OUTPUTS).unwrap().insert((doc, input), v.as_slice()).unwrap();
            });
        }
        fn blob(&self, doc: Id) -> Vec<u8> {
            self.get(DOCS, doc)
        }
        fn columns(&self, doc: Id) -> Columns {
            decode_columns(&self.get(COLUMNS, doc))
        }
        fn input(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(INPUTS, (doc, input)))
        }
        fn output(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(OUTPUTS, (doc, input)))
        }
        fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
            let tx = self.db.begin_read().unwrap();
            let t = tx.open_table(INPUTS).unwrap();
            t.range((doc, 0)..=(doc, u64::MAX))
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().1, decode_value(v.value()))
                })
                .collect()
        }
        fn update_blob(&self, doc: Id, blob: &[u8]) {
            self.write(|tx| {
                tx.open_table(DOCS).unwrap().insert(doc, blob).unwrap();
            });
        }
        fn update_input(&self, doc: Id, input: Id, value: &Value) {
            let v = encode_value(value);
            self.write(|tx| {
                tx.open_table(INPUTS).unwrap().insert((doc, input), v.as_slice()).unwrap();
            });
        }
        fn delete(&self, doc: Id) {
            self.write(|tx| {
                tx.open_table(DOCS).unwrap().remove(doc).unwrap();
                tx.open_table(COLUMNS).unwrap().remove(doc).unwrap();
                tx.open_table(INPUTS).unwrap().retain_in((doc, 0)..=(doc, u64::MAX), |_, _| false).unwrap();
                tx.open_table(OUTPUTS).unwrap().retain_in((doc, 0)..=(doc, u64::MAX), |_, _| false).unwrap();
            });
        }
        fn flush(&self) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            tx.commit().unwrap();
        }
    }
}

// ----- fjall ------------------------------------------------------------------

mod fjall_store {
    use super::*;
    use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

    pub struct FjallStore {
        keyspace: Keyspace,
        docs: PartitionHandle,
        columns: PartitionHandle,
        inputs: PartitionHandle,
        outputs: PartitionHandle,
        durable: bool,
        ids: Arc<AtomicU64>,
    }

    impl FjallStore {
        pub fn open(dir: &Path, durable: bool, ids: Arc<AtomicU64>) -> FjallStore {
            let keyspace = Config::new(dir.join("fjall")).open().expect("open fjall");
            let p = |name: &str| keyspace.open_partition(name, PartitionCreateOptions::default()).unwrap();
            FjallStore {
                docs: p("docs"),
                columns: p("columns"),
                inputs: p("inputs"),
                outputs: p("outputs"),
                keyspace,
                durable,
                ids,
            }
        }

        fn batch(&self) -> fjall::Batch {
            self.keyspace.batch().durability(self.durable.then_some(PersistMode::SyncData))
        }
    }

    impl Store for FjallStore {
        fn create(&self, blob: &[u8], columns: &Columns) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = self.batch();
            b.insert(&self.docs, be(id), blob);
            b.insert(&self.columns, be(id), encode_columns(columns));
            b.commit().unwrap();
            id
        }
        fn add_input(&self, doc: Id, value: &Value) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = self.batch();
            b.insert(&self.inputs, pair(doc, id), encode_value(value));
            b.commit().unwrap();
            id
        }
        fn set_output(&self, doc: Id, input: Id, value: &Value) {
            let mut b = self.batch();
            b.insert(&self.outputs, pair(doc, input), encode_value(value));
            b.commit().unwrap();
        }
        fn blob(&self, doc: Id) -> Vec<u8> {
            self.docs.get(be(doc)).unwrap().expect("present").to_vec()
        }
        fn columns(&self, doc: Id) -> Columns {
            decode_columns(&self.columns.get(be(doc)).unwrap().expect("present"))
        }
        fn input(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.inputs.get(pair(doc, input)).unwrap().expect("present"))
        }
        fn output(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.outputs.get(pair(doc, input)).unwrap().expect("present"))
        }
        fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
            self.inputs
                .prefix(be(doc))
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (id_at(&k, 8), decode_value(&v))
                })
                .collect()
        }
        fn update_blob(&self, doc: Id, blob: &[u8]) {
            let mut b = self.batch();
            b.insert(&self.docs, be(doc), blob);
            b.commit().unwrap();
        }
        fn update_input(&self, doc: Id, input: Id, value: &Value) {
            let mut b = self.batch();
            b.insert(&self.inputs, pair(doc, input), encode_value(value));
            b.commit().unwrap();
        }
        fn delete(&self, doc: Id) {
            let mut b = self.batch();
            b.remove(&self.docs, be(doc));
            b.remove(&self.columns, be(doc));
            for p in [&self.inputs, &self.outputs] {
                for e in p.prefix(be(doc)) {
                    let (k, _) = e.unwrap();
                    b.remove(p, k);
                }
            }
            b.commit().unwrap();
        }
        fn flush(&self) {
            self.keyspace.persist(PersistMode::SyncAll).unwrap();
        }
    }
}

// ----- sled -------------------------------------------------------------------

mod sled_store {
    use super::*;

    pub struct SledStore {
        db: sled::Db,
        durable: bool,
        ids: Arc<AtomicU64>,
    }

    impl SledStore {
        pub fn open(dir: &Path, durable: bool, ids: Arc<AtomicU64>) -> SledStore {
            SledStore { db: sled::open(dir.join("sled")).expect("open sled"), durable, ids }
        }

        fn apply(&self, batch: sled::Batch) {
            self.db.apply_batch(batch).unwrap();
            if self.durable {
                self.db.flush().unwrap();
            }
        }

        fn get(&self, key: &[u8]) -> sled::IVec {
            self.db.get(key).unwrap().expect("present")
        }
    }

    impl Store for SledStore {
        fn create(&self, blob: &[u8], columns: &Columns) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = sled::Batch::default();
            b.insert(tagged(b'd', &[id]), blob);
            b.insert(tagged(b'c', &[id]), encode_columns(columns));
            self.apply(b);
            id
        }
        fn add_input(&self, doc: Id, value: &Value) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = sled::Batch::default();
            b.insert(tagged(b'i', &[doc, id]), encode_value(value));
            self.apply(b);
            id
        }
        fn set_output(&self, doc: Id, input: Id, value: &Value) {
            let mut b = sled::Batch::default();
            b.insert(tagged(b'o', &[doc, input]), encode_value(value));
            self.apply(b);
        }
        fn blob(&self, doc: Id) -> Vec<u8> {
            self.get(&tagged(b'd', &[doc])).to_vec()
        }
        fn columns(&self, doc: Id) -> Columns {
            decode_columns(&self.get(&tagged(b'c', &[doc])))
        }
        fn input(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(&tagged(b'i', &[doc, input])))
        }
        fn output(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(&tagged(b'o', &[doc, input])))
        }
        fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
            self.db
                .scan_prefix(tagged(b'i', &[doc]))
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (id_at(&k, 9), decode_value(&v))
                })
                .collect()
        }
        fn update_blob(&self, doc: Id, blob: &[u8]) {
            let mut b = sled::Batch::default();
            b.insert(tagged(b'd', &[doc]), blob);
            self.apply(b);
        }
        fn update_input(&self, doc: Id, input: Id, value: &Value) {
            let mut b = sled::Batch::default();
            b.insert(tagged(b'i', &[doc, input]), encode_value(value));
            self.apply(b);
        }
        fn delete(&self, doc: Id) {
            let mut b = sled::Batch::default();
            b.remove(tagged(b'd', &[doc]));
            b.remove(tagged(b'c', &[doc]));
            for tag in [b'i', b'o'] {
                for e in self.db.scan_prefix(tagged(tag, &[doc])) {
                    b.remove(e.unwrap().0);
                }
            }
            self.apply(b);
        }
        fn flush(&self) {
            self.db.flush().unwrap();
        }
    }
}

// ----- RocksDB ----------------------------------------------------------------

#[cfg(feature = "rocksdb")]
mod rocksdb_store {
    use super::*;
    use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};

    pub struct RocksStore {
        db: DB,
        durable: bool,
        ids: Arc<AtomicU64>,
    }

    impl RocksStore {
        pub fn open(dir: &Path, durable: bool, ids: Arc<AtomicU64>) -> RocksStore {
            RocksStore { db: DB::open_default(dir.join("rocksdb")).expect("open rocksdb"), durable, ids }
        }

        fn apply(&self, batch: WriteBatch) {
            let mut o = WriteOptions::default();
            o.set_sync(self.durable);
            self.db.write_opt(batch, &o).unwrap();
        }

        fn get(&self, key: &[u8]) -> Vec<u8> {
            self.db.get(key).unwrap().expect("present")
        }

        fn scan(&self, prefix: &[u8]) -> Vec<(Box<[u8]>, Box<[u8]>)> {
            self.db
                .iterator(IteratorMode::From(prefix, Direction::Forward))
                .map(|e| e.unwrap())
                .take_while(|(k, _)| k.starts_with(prefix))
                .collect()
        }
    }

    impl Store for RocksStore {
        fn create(&self, blob: &[u8], columns: &Columns) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = WriteBatch::default();
            b.put(tagged(b'd', &[id]), blob);
            b.put(tagged(b'c', &[id]), encode_columns(columns));
            self.apply(b);
            id
        }
        fn add_input(&self, doc: Id, value: &Value) -> Id {
            let id = self.ids.fetch_add(1, Ordering::Relaxed);
            let mut b = WriteBatch::default();
            b.put(tagged(b'i', &[doc, id]), encode_value(value));
            self.apply(b);
            id
        }
        fn set_output(&self, doc: Id, input: Id, value: &Value) {
            let mut b = WriteBatch::default();
            b.put(tagged(b'o', &[doc, input]), encode_value(value));
            self.apply(b);
        }
        fn blob(&self, doc: Id) -> Vec<u8> {
            self.get(&tagged(b'd', &[doc]))
        }
        fn columns(&self, doc: Id) -> Columns {
            decode_columns(&self.get(&tagged(b'c', &[doc])))
        }
        fn input(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(&tagged(b'i', &[doc, input])))
        }
        fn output(&self, doc: Id, input: Id) -> Value {
            decode_value(&self.get(&tagged(b'o', &[doc, input])))
        }
        fn chain(&self, doc: Id) -> Vec<(Id, Value)> {
            self.scan(&tagged(b'i', &[doc])).into_iter().map(|(k, v)| (id_at(&k, 9), decode_value(&v))).collect()
        }
        fn update_blob(&self, doc: Id, blob: &[u8]) {
            let mut b = WriteBatch::default();
            b.put(tagged(b'd', &[doc]), blob);
            self.apply(b);
        }
        fn update_input(&self, doc: Id, input: Id, value: &Value) {
            let mut b = WriteBatch::default();
            b.put(tagged(b'i', &[doc, input]), encode_value(value));
            self.apply(b);
        }
        fn delete(&self, doc: Id) {
            let mut b = WriteBatch::default();
            b.delete(tagged(b'd', &[doc]));
            b.delete(tagged(b'c', &[doc]));
            for tag in [b'i', b'o'] {
                for (k, _) in self.scan(&tagged(tag, &[doc])) {
                    b.delete(k);
                }
            }
            self.apply(b);
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
