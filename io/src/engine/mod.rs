//! The engine: the core's decisions carried out on a [`FileSystem`].
//!
//! One job per file:
//! - this file: the public API ([`Engine`]), opening, and the shared state
//!   with its lock order;
//! - `index.rs`: the index (key directory) and the table of open segment
//!   files it points into;
//! - `write.rs`: the write path: check, encode, append, rotate (seal the
//!   active segment), id reservation, poisoning;
//! - `commit.rs`: durability: every fsync of segment data and group commit;
//! - `read.rs`: the read path: locate a record, read it, check it;
//! - `recovery.rs`: carrying out the core's recovery plan at open;
//! - `compaction.rs`: carrying out the core's compaction choice, and hints;
//! - `ticker.rs`: the background threads (interval flusher, compactor).
//!
//! # Lock order
//!
//! A thread that holds several of these locks takes them in this order
//! (and may skip any):
//!
//! 1. `Shared::compacting`: held for a whole compaction or hint write;
//! 2. `Shared::writer`: serialises appends (check, encode, append, apply);
//! 3. `Shared::index`: held only to look up or apply, never across IO, so
//!    readers never wait for a write or an fsync;
//! 4. `Durability::gate` (`commit.rs`), held across every fsync of the
//!    active segment, then `Durability::state`: who syncs and what is
//!    durable;
//! 5. `Shared::poison`;
//! 6. `Shared::last_compaction`;
//! 7. `SegmentFile::map` (`segment.rs`), the memory-map lock inside each
//!    open segment file, a leaf.
//!
//! Condition variables wait on `Durability::state` only. The group commit
//! leader lets `state` go while it fsyncs, and takes `writer` only then.
//!
//! Acknowledgement: a write returns once its record is appended and indexed,
//! and, under [`SyncPolicy::Always`], once an fsync covering it succeeded.
//! A failed append or fsync poisons the engine: later writes get
//! [`Error::Poisoned`], reads keep working. Every answer is honest: an
//! error means the write changed nothing, except
//! [`Error::OutcomeUnknown`], for a write whose record was appended when
//! the fsync that was to cover it failed. A write appended before another
//! writer's append failed is still synced and acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use stratum_core::{Columns, Expect, Id, Invalid, Location, Op, Place, Ref, SegmentId, Trigger, Value, Violation};

use crate::error::{Error, Result};
use crate::fs::{DirLock, FileSystem, OsFileSystem};
use crate::options::{Options, SyncPolicy};
use crate::segment::SegmentFile;
use stratum_core::LOCK_NAME;

mod commit;
mod compaction;
mod index;
mod read;
mod recovery;
mod snapshot;
mod ticker;
mod write;

use commit::Durability;
pub use compaction::CompactionReport;
use index::Index;
use read::{Wait, answered, without_waiting};
use recovery::Recovered;
pub use snapshot::{DocumentSnapshot, DocumentView, InputView};
use ticker::{Backoff, Ticker, Told};
use write::Writer;

/// A Stratum store: documents, their ordered inputs and one output per input.
///
/// `Engine` is `Send + Sync`; share it with an `Arc`. Every method is a
/// single atomic change or a consistent read.
///
/// ```
/// use stratum_io::{Engine, Options, Value};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path(), Options::default())?;
///
/// let columns = [("name".to_string(), "Two Sum".to_string())].into();
/// let doc = engine.create_document(b"<h1>Two Sum</h1>", columns)?;
/// let input = engine.add_input(doc, &Value::IntList(vec![2, 7, 11, 15]))?;
/// engine.set_output(doc, input, &Value::IntList(vec![0, 1]))?;
///
/// assert_eq!(engine.output(doc, input)?, Value::IntList(vec![0, 1]));
/// assert_eq!(engine.document_columns(doc)?["name"], "Two Sum");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    /// Background threads: the interval flusher and the compactor.
    tasks: Vec<Ticker>,
}

#[derive(Debug)]
/// What the engine's API, its background threads and its compactions
/// share. The locks are numbered as in the module's lock order.
struct Shared {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    /// Lock 3: the key directory and the open segment files.
    index: RwLock<Index>,
    /// Lock 2: the active segment's append state.
    writer: Mutex<Writer>,
    /// Holds lock 4 (`state`): group commit.
    durability: Durability,
    /// Lock 5: why writes are refused, once an IO failure made them unsafe.
    poison: Mutex<Option<Arc<str>>>,
    /// Successful fsyncs of segment data since open.
    fsyncs: AtomicU64,
    /// Lock 1: held for the whole of a compaction or hint write, so one
    /// runs at a time.
    compacting: Mutex<()>,
    compactions: AtomicU64,
    /// Lock 6.
    last_compaction: Mutex<Option<CompactionReport>>,
    _lock: LockGuard,
}

struct LockGuard(#[allow(dead_code)] DirLock);

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Counts and sizes, from the index (no disk reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Live documents.
    pub documents: u64,
    /// Inputs of the live documents.
    pub inputs: u64,
    /// Inputs that have an output.
    pub outputs: u64,
    /// Segment files, the active one included.
    pub segments: u64,
    /// The id of the segment taking appends.
    pub active_segment: SegmentId,
    /// The active segment's size in bytes, header included.
    pub active_segment_bytes: u64,
    /// Bytes of all records in all segments.
    pub total_bytes: u64,
    /// Bytes of the records the index points to.
    pub live_bytes: u64,
    /// `total_bytes - live_bytes`: what compaction can reclaim.
    pub garbage_bytes: u64,
    /// Records in all segments.
    pub records: u64,
    /// The id the next document or input will get.
    pub next_id: Id,
    /// Successful fsyncs of segment data since open.
    pub fsyncs: u64,
    /// Set when writes are refused after an IO failure.
    pub poisoned: Option<String>,
    /// Sealed segments with a hint file (read at open or written since).
    pub hinted_segments: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// What the last compaction did.
    pub last_compaction: Option<CompactionReport>,
}

impl Engine {
    /// Opens (or creates) the store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        Engine::open_with(Arc::new(OsFileSystem), dir, options)
    }

    /// Opens (or creates) the store in `dir` on `fs`, replaying every
    /// segment to rebuild the index. A torn tail of the active segment is
    /// cut off and logged; damage anywhere else is an [`Error::Corrupt`].
    pub fn open_with(fs: Arc<dyn FileSystem>, dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let started = Instant::now();
        fs.create_dir_all(&dir).map_err(Error::io(format!("creating data directory {}", dir.display())))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone(), lock: lock_path.clone() },
            _ => Error::io(format!("locking {}", lock_path.display()))(e),
        })?;

        let Recovered { keydir, files, active, merged, hinted } = recovery::recover(fs.as_ref(), &dir)?;
        let (segment, file, len) = active;
        debug_assert_eq!(keydir.check_invariants(), Ok(()), "the index recovery built is inconsistent");

        tracing::info!(
            dir = %dir.display(),
            segments = files.len(),
            from_hints = hinted.len(),
            documents = keydir.document_count(),
            inputs = keydir.input_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered"
        );

        let sync = options.sync;
        let shared = Arc::new(Shared {
            fs,
            dir,
            options,
            index: RwLock::new(Index {
                keydir,
                files,
                active: segment,
                merged: merged.map(|(id, _)| id),
                merged_covers_from: merged.map(|(_, from)| from),
                hinted,
            }),
            writer: Mutex::new(Writer {
                segment,
                file,
                len,
                appended: 0,
                records_end: 0,
                marked: 0,
                buf: Vec::new(),
                frame: Vec::new(),
            }),
            durability: Durability::default(),
            poison: Mutex::new(None),
            fsyncs: AtomicU64::new(0),
            compacting: Mutex::new(()),
            compactions: AtomicU64::new(0),
            last_compaction: Mutex::new(None),
            _lock: LockGuard(lock),
        });
        let mut tasks = Vec::new();
        if let SyncPolicy::Interval(every) = sync {
            tasks.push(Ticker::start("stratum-flusher", Arc::downgrade(&shared), every, |shared| {
                let position = shared.writer.lock().appended;
                if let Err(e) = shared.wait_durable(position, None) {
                    tracing::warn!(error = %e, "interval flush failed");
                }
            }));
        }
        if let Some(compaction) = shared.options.compaction {
            // On a full disk both tasks fail on every tick: they back off,
            // and each says so once.
            let backoffs = Mutex::new((Backoff::default(), Backoff::default()));
            let every = compaction.interval;
            tasks.push(Ticker::start("stratum-compactor", Arc::downgrade(&shared), every, move |shared| {
                let mut backoffs = backoffs.lock();
                let (compacting, hinting) = &mut *backoffs;
                let now = Instant::now();
                if compacting.due(now) {
                    let result = shared.compact(Trigger::Policy(compaction.policy)).map(drop);
                    background_outcome("background compaction", result, compacting, now, every);
                }
                if hinting.due(now) {
                    let result = shared.write_hints().map(drop);
                    background_outcome("writing hint files", result, hinting, now, every);
                }
            }));
        }
        Ok(Engine { shared, tasks })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    // ----- batches and versions ---------------------------------------------

    /// Applies `ops` atomically: every one of them or none. They are checked
    /// in order against the index as the earlier ones leave it (so a batch
    /// may create a document and fill its chain, naming it as
    /// `Ref::Created(n)`), and after the preconditions in `expect`; any
    /// failed check refuses the whole batch and writes nothing. The records
    /// go to the log as one batch frame (one record when there is only
    /// one), are applied to the index under one lock (a reader sees all of
    /// them or none) and are covered by one fsync. A crash keeps all or
    /// none of them. An operation's refusal, in a batch of several, is an
    /// [`Error::InBatch`] naming it.
    pub fn batch(&self, ops: &[Op<'_>], expect: &[Expect]) -> Result<Committed> {
        self.shared.write(ops, expect)
    }

    /// One operation (see [`Engine::batch`]), refused with
    /// [`Error::VersionMismatch`] unless its document is at
    /// `expected_version` when one is given.
    pub fn write(&self, op: Op<'_>, expected_version: Option<u64>) -> Result<Committed> {
        let expect = expectation(&op, expected_version)?;
        self.shared.write(&[op], expect.as_slice())
    }

    /// The version of a document: it grows with every change to the
    /// document or its chain.
    pub fn document_version(&self, id: Id) -> Result<u64> {
        Ok(self.shared.index.read().keydir.document(id)?.version())
    }

    /// A consistent view of a whole document, taken under one lock: its
    /// version, columns, and where its blob and every input and output of
    /// its chain are. Reading through it later gives the data of that
    /// version even if writers or a compaction change the document
    /// meanwhile (the records are immutable and the view keeps their files
    /// open).
    pub fn document_snapshot(&self, id: Id) -> Result<DocumentSnapshot> {
        snapshot::take(&self.shared, id)
    }

    /// A whole document: blob, columns, version and every input of its
    /// chain with its value and output, all of one version.
    pub fn document(&self, id: Id) -> Result<DocumentView> {
        answered(self.document_snapshot(id)?.view(Wait::Yes))
    }

    /// [`Engine::document`] if it can be answered without waiting (see
    /// [`Engine::document_blob_now`]); also `None` when its records add up
    /// to more than 1 MiB.
    pub fn document_now(&self, id: Id) -> Option<Result<DocumentView>> {
        snapshot::read_now(&self.shared, id)
    }

    /// Creates a document with its whole chain in one batch: `inputs` in
    /// order, each with its output if it has one.
    pub fn import_document(
        &self,
        blob: &[u8],
        columns: &Columns,
        inputs: &[(Value, Option<Value>)],
    ) -> Result<Committed> {
        let mut ops = vec![Op::CreateDocument { blob, columns }];
        push_inputs(&mut ops, Ref::Created(0), inputs);
        // The operations are this method's own: their indexes mean nothing
        // to the caller.
        self.shared.write(&ops, &[]).map_err(Error::into_cause)
    }

    /// Replaces a document's whole chain (inputs and outputs) by `inputs`
    /// in one batch, if the document is at `expected_version` when one is
    /// given. Readers see the old chain or the new one, never a mix.
    pub fn replace_inputs(
        &self,
        document: Id,
        inputs: &[(Value, Option<Value>)],
        expected_version: Option<u64>,
    ) -> Result<Committed> {
        let mut ops = vec![Op::ClearInputs { document: Ref::Id(document) }];
        push_inputs(&mut ops, Ref::Id(document), inputs);
        let expect: Vec<Expect> = expected_version.map(|version| Expect { document, version }).into_iter().collect();
        self.shared.write(&ops, &expect).map_err(Error::into_cause)
    }

    // ----- documents -------------------------------------------------------

    /// Stores a new document and returns its id.
    pub fn create_document(&self, blob: &[u8], columns: Columns) -> Result<Id> {
        Ok(self.write(Op::CreateDocument { blob, columns: &columns }, None)?.created())
    }

    /// The document's blob: one index lookup and one read of its record
    /// (a copy out of the segment's memory map, or a positioned read).
    pub fn document_blob(&self, id: Id) -> Result<Vec<u8>> {
        self.document_blob_versioned(id).map(Versioned::into_value)
    }

    /// [`Engine::document_blob`] with the document's version at the read.
    pub fn document_blob_versioned(&self, id: Id) -> Result<Versioned<Vec<u8>>> {
        answered(self.shared.blob(id, Wait::Yes))
    }

    /// [`Engine::document_blob_versioned`] if it can be answered without
    /// waiting: `None` if a writer holds the index, the record is not in
    /// memory, or it is over 1 MiB. It takes no lock that it would wait for
    /// and reads no byte that is not in memory, so an async task may call
    /// it and fall back to a blocking thread when it gets `None`. (It may
    /// unmap a segment's old map, if it held the last view of it.)
    pub fn document_blob_now(&self, id: Id) -> Option<Result<Versioned<Vec<u8>>>> {
        without_waiting(self.shared.blob(id, Wait::No))
    }

    /// The document's columns, from memory.
    pub fn document_columns(&self, id: Id) -> Result<Columns> {
        self.document_columns_versioned(id).map(Versioned::into_value)
    }

    /// [`Engine::document_columns`] with the document's version.
    pub fn document_columns_versioned(&self, id: Id) -> Result<Versioned<Columns>> {
        answered(self.shared.columns(id, Wait::Yes))
    }

    /// [`Engine::document_columns_versioned`] unless a writer holds the
    /// index.
    pub fn document_columns_now(&self, id: Id) -> Option<Result<Versioned<Columns>>> {
        without_waiting(self.shared.columns(id, Wait::No))
    }

    /// Replaces the document's blob.
    pub fn update_blob(&self, id: Id, blob: &[u8]) -> Result<()> {
        self.write(Op::SetBlob { document: Ref::Id(id), blob }, None).map(drop)
    }

    /// Sets (adds or replaces) one column of the document.
    pub fn set_column(&self, id: Id, name: &str, value: &str) -> Result<()> {
        self.write(Op::SetColumn { document: Ref::Id(id), name, value }, None).map(drop)
    }

    /// Deletes the document with its inputs and their outputs.
    pub fn delete_document(&self, id: Id) -> Result<()> {
        self.write(Op::DeleteDocument { document: Ref::Id(id) }, None).map(drop)
    }

    /// Every live document id, ascending.
    pub fn document_ids(&self) -> Vec<Id> {
        self.shared.index.read().keydir.document_ids().collect()
    }

    /// Up to `limit` live document ids above `after`, ascending: one page
    /// of a listing, in time proportional to the page.
    pub fn document_ids_after(&self, after: Id, limit: usize) -> Vec<Id> {
        self.shared.index.read().keydir.document_ids_after(after).take(limit).collect()
    }

    // ----- inputs ----------------------------------------------------------

    /// Appends an input to the end of the document's chain; returns its id.
    pub fn add_input(&self, document: Id, value: &Value) -> Result<Id> {
        let op = Op::AddInput { document: Ref::Id(document), value, place: Place::End };
        Ok(self.write(op, None)?.created())
    }

    /// The value of one input.
    pub fn input(&self, document: Id, input: Id) -> Result<Value> {
        self.input_versioned(document, input).map(Versioned::into_value)
    }

    /// [`Engine::input`] with the document's version.
    pub fn input_versioned(&self, document: Id, input: Id) -> Result<Versioned<Value>> {
        answered(self.shared.value(document, input, |k| Ok(k.input(document, input)?.value), Wait::Yes))
    }

    /// [`Engine::input_versioned`] if it can be answered without waiting
    /// (see [`Engine::document_blob_now`]).
    pub fn input_now(&self, document: Id, input: Id) -> Option<Result<Versioned<Value>>> {
        without_waiting(self.shared.value(document, input, |k| Ok(k.input(document, input)?.value), Wait::No))
    }

    /// Every input of the document, in chain order, with its value.
    pub fn inputs(&self, document: Id) -> Result<Vec<(Id, Value)>> {
        self.inputs_after(document, 0, usize::MAX).map(Versioned::into_value)
    }

    /// Up to `limit` inputs of the document that come after input `after`
    /// in the chain (0 for the start), in chain order, with their values,
    /// and the document's version they are from.
    pub fn inputs_after(&self, document: Id, after: Id, limit: usize) -> Result<Versioned<Vec<(Id, Value)>>> {
        let (version, located): (u64, Vec<(Id, Location, Arc<SegmentFile>)>) = {
            let index = self.shared.index.read();
            let doc = index.keydir.document(document)?;
            let located = doc
                .chain_after(after)
                .take(limit)
                .map(|input| Ok((input.id, input.value, index.file(input.value)?)))
                .collect::<Result<_>>()?;
            (doc.version(), located)
        };
        let value = located
            .into_iter()
            .map(|(id, location, file)| Ok((id, self.shared.read_value(location, &file, id)?)))
            .collect::<Result<_>>()?;
        Ok(Versioned { value, version })
    }

    /// Replaces an input's value.
    pub fn update_input(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.write(Op::UpdateInput { document: Ref::Id(document), input: Ref::Id(input), value }, None).map(drop)
    }

    /// Deletes an input and its output; the chain keeps its order.
    pub fn delete_input(&self, document: Id, input: Id) -> Result<()> {
        self.write(Op::DeleteInput { document: Ref::Id(document), input: Ref::Id(input) }, None).map(drop)
    }

    // ----- outputs ---------------------------------------------------------

    /// Sets the output of an input, replacing any output it had.
    pub fn set_output(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.write(Op::SetOutput { document: Ref::Id(document), input: Ref::Id(input), value }, None).map(drop)
    }

    /// The output of an input.
    pub fn output(&self, document: Id, input: Id) -> Result<Value> {
        self.output_versioned(document, input).map(Versioned::into_value)
    }

    /// [`Engine::output`] with the document's version.
    pub fn output_versioned(&self, document: Id, input: Id) -> Result<Versioned<Value>> {
        answered(self.shared.value(document, input, |k| Ok(k.output(document, input)?), Wait::Yes))
    }

    /// [`Engine::output_versioned`] if it can be answered without waiting
    /// (see [`Engine::document_blob_now`]).
    pub fn output_now(&self, document: Id, input: Id) -> Option<Result<Versioned<Value>>> {
        without_waiting(self.shared.value(document, input, |k| Ok(k.output(document, input)?), Wait::No))
    }

    /// Replaces the output of an input that has one.
    pub fn update_output(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.write(Op::UpdateOutput { document: Ref::Id(document), input: Ref::Id(input), value }, None).map(drop)
    }

    /// Removes the output of an input.
    pub fn delete_output(&self, document: Id, input: Id) -> Result<()> {
        self.write(Op::DeleteOutput { document: Ref::Id(document), input: Ref::Id(input) }, None).map(drop)
    }

    // ----- administration --------------------------------------------------

    /// Makes every acknowledged write durable, whatever the sync policy,
    /// and the durability mark that says so (a second fsync, when the
    /// first covered new records).
    ///
    /// After a failed fsync this is [`Error::Poisoned`]: what was
    /// acknowledged before it is durable, what came after may not be.
    pub fn flush(&self) -> Result<()> {
        for _ in 0..2 {
            let position = self.shared.writer.lock().appended;
            self.shared.wait_durable(position, None).map_err(|e| match e {
                Error::OutcomeUnknown { reason } => Error::Poisoned { reason },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Counts and sizes, from memory.
    pub fn stats(&self) -> Stats {
        let (active_segment, active_segment_bytes) = {
            let w = self.shared.writer.lock();
            (w.segment, w.len)
        };
        let index = self.shared.index.read();
        let k = &index.keydir;
        let segments = k.segments();
        let total_bytes = segments.values().map(|s| s.total_bytes).sum();
        let live_bytes = segments.values().map(|s| s.live_bytes).sum();
        Stats {
            documents: k.document_count() as u64,
            inputs: k.input_count(),
            outputs: k.output_count(),
            segments: index.files.len() as u64,
            active_segment,
            active_segment_bytes,
            total_bytes,
            live_bytes,
            garbage_bytes: total_bytes - live_bytes,
            records: segments.values().map(|s| s.records).sum(),
            next_id: k.next_id(),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            poisoned: self.shared.poison.lock().as_deref().map(str::to_owned),
            hinted_segments: index.hinted.len() as u64,
            compactions: self.shared.compactions.load(Ordering::Relaxed),
            last_compaction: *self.shared.last_compaction.lock(),
        }
    }

    /// Merges every sealed segment (sealing the active one first) into
    /// `merged.seg`, keeping the newest version of each live record and
    /// dropping old versions, tombstones and everything deleted. Returns
    /// when the old segments are gone. Reads and writes go on meanwhile.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.shared.compact(Trigger::Now)
    }

    /// Writes the hint file of every sealed segment that lacks one, so the
    /// next open reads hints instead of whole segments. The background
    /// compactor calls this on every tick. Returns how many were written.
    pub fn write_hints(&self) -> Result<u64> {
        self.shared.write_hints()
    }

    /// Checks every invariant of the in-memory index (see
    /// [`stratum_core::KeyDir::check_invariants`]), recounting it from
    /// scratch: O(index), for tests and diagnostics. Debug builds also check
    /// at open and after every compaction.
    pub fn check_invariants(&self) -> std::result::Result<(), Violation> {
        self.shared.index.read().keydir.check_invariants()
    }

    /// Flushes and closes the engine, reporting a failed final sync.
    pub fn close(mut self) -> Result<()> {
        self.stop_tasks();
        self.flush()
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.stop();
        }
    }
}

/// What a committed write did: the ids it created and the versions of the
/// documents it named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// What each operation created, in order (`None` for an operation that
    /// creates nothing).
    pub created: Vec<Option<Id>>,
    /// Each document the batch named or created, ascending, with its
    /// version after the batch (a deleted document is not listed).
    pub versions: Vec<(Id, u64)>,
}

impl Committed {
    /// The version of `document` after the write, if the write named it
    /// and it still exists.
    pub fn version(&self, document: Id) -> Option<u64> {
        self.versions.iter().find(|(id, _)| *id == document).map(|(_, version)| *version)
    }

    /// The id the first operation created.
    fn created(&self) -> Id {
        self.created.first().copied().flatten().expect("a create creates an id")
    }
}

/// Data read from a document, with the document's version at the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// What was read.
    pub value: T,
    /// The version of the document it was read from.
    pub version: u64,
}

impl<T> Versioned<T> {
    /// What was read, without the version.
    pub fn into_value(self) -> T {
        self.value
    }
}

/// The precondition of a single operation expecting `version` of its
/// document: refused if the operation names no existing document.
fn expectation(op: &Op<'_>, version: Option<u64>) -> Result<Option<Expect>> {
    let Some(version) = version else { return Ok(None) };
    match op.named_document() {
        Some(Ref::Id(document)) => Ok(Some(Expect { document, version })),
        _ => Err(Invalid::NothingToExpect.into()),
    }
}

/// The ops adding `inputs` (with their outputs) to the end of `document`'s
/// chain, after what `ops` already holds.
fn push_inputs<'a>(ops: &mut Vec<Op<'a>>, document: Ref, inputs: &'a [(Value, Option<Value>)]) {
    for (value, output) in inputs {
        ops.push(Op::AddInput { document, value, place: Place::End });
        if let Some(output) = output {
            let input = Ref::Created(ops.len() - 1);
            ops.push(Op::SetOutput { document, input, value: output });
        }
    }
}

/// Logs a background task's outcome as its [`Backoff`] says is worth it.
fn background_outcome(what: &str, result: Result<()>, backoff: &mut Backoff, now: Instant, every: Duration) {
    match result {
        Ok(()) => {
            if let Told::Recovered { failures } = backoff.succeeded() {
                tracing::info!(failures, "{what} works again");
            }
        }
        Err(e) => match backoff.failed(now, every) {
            Told::FirstFailure => {
                tracing::warn!(error = %e, "{what} failed; retrying less and less often, up to every {} s",
                    ticker::MAX_BACKOFF.as_secs());
            }
            _ => tracing::debug!(error = %e, "{what} failed again"),
        },
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_tasks();
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "final flush on close failed");
        }
    }
}

#[cfg(test)]
mod tests {
    /// The engine is shared across threads behind an `Arc`.
    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Engine>();
    }
}
