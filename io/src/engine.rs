//! The engine: the core's decisions carried out on a [`FileSystem`].
//!
//! Locking: `writer` serialises appends (check, encode, append, index); the
//! index's `RwLock` is held only to look up or apply, never across IO, so
//! readers never wait for a write or an fsync. Lock order is `writer`, then
//! `index`, then `durability.state`.
//!
//! Acknowledgement: a write returns once its record is appended and indexed,
//! and, under [`SyncPolicy::Always`], once an fsync covering it succeeded.
//! Concurrent writers share fsyncs (group commit): whoever finds no fsync
//! running leads the next one; the others wait for it. Before it syncs, the
//! leader gives other writers a moment to append (see `Shared::gather`: at
//! most half the last fsync's time, never when it is the only writer), so
//! that one fsync covers them all instead of half of them.
//! A failed append or fsync poisons the engine: the caller gets
//! the error, later writes get [`Error::Poisoned`], reads keep working.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use stratum_core::{
    Body, Columns, Id, KeyDir, Location, Mutation, RecordMeta, RecordRef, SEGMENT_HEADER_LEN, SegmentId, Value,
    decode_record, encode_record,
};

use crate::error::{Error, Result};
use crate::fs::{DirLock, FileBytes, FileHandle, FileSystem, OsFileSystem};
use crate::options::{Options, SyncPolicy};
use crate::segment::{self, ACTIVE_NAME, LOCK_NAME, MERGED_NAME};

mod compaction;
mod recovery;

pub use compaction::CompactionReport;
use recovery::Recovered;

/// How many ids one `ReserveIds` record covers. Large, so that under `none`
/// its fsync is rare; ids are plentiful, so the jump after a restart is
/// harmless.
const ID_RESERVATION: Id = 1 << 16;

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
struct Shared {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    options: Options,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    durability: Durability,
    poison: Mutex<Option<Arc<str>>>,
    fsyncs: AtomicU64,
    /// Held for the whole of a compaction: one runs at a time.
    compacting: Mutex<()>,
    compactions: AtomicU64,
    last_compaction: Mutex<Option<CompactionReport>>,
    _lock: LockGuard,
}

struct LockGuard(#[allow(dead_code)] DirLock);

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

#[derive(Debug)]
struct Index {
    keydir: KeyDir,
    files: HashMap<SegmentId, Arc<dyn FileHandle>>,
    /// The segment behind `active.seg`.
    active: SegmentId,
    /// The segment behind `merged.seg`, if a compaction wrote one.
    merged: Option<SegmentId>,
    /// Sealed segments whose hint file is written.
    hinted: HashSet<SegmentId>,
}

#[derive(Debug)]
struct Writer {
    segment: SegmentId,
    file: Arc<dyn FileHandle>,
    /// Length of the active segment: where the next record goes.
    len: u64,
    /// Bytes appended since open, across segments: the log position that
    /// group commit counts in.
    appended: u64,
    /// Ids below this are covered by a durable `ReserveIds` record.
    reserved_ids: Id,
    /// The record being appended.
    buf: Vec<u8>,
    /// Encoded columns for the index (see [`Mutation::effect`]).
    scratch: Vec<u8>,
}

#[derive(Debug, Default)]
struct Durability {
    state: Mutex<SyncState>,
    /// Signalled when an fsync ends (or the engine is poisoned).
    synced: Condvar,
    /// Signalled when a writer starts waiting for an fsync: the leader of
    /// the next one may be gathering writers.
    waiting: Condvar,
    /// Writers inside a write call under [`SyncPolicy::Always`] that have
    /// not yet finished waiting for their fsync. Decreased only under
    /// `state`, so a gathering leader cannot miss the end of its wait.
    writers: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Every byte appended before this log position is durable.
    durable: u64,
    /// An fsync is running, or its leader is gathering writers.
    syncing: bool,
    /// Threads waiting for an fsync.
    waiting: u64,
    /// How long the last fsync took.
    last_sync: Duration,
    /// How many threads the last fsync covered (gathered for).
    last_batch: u64,
    /// An fsync failed. On Linux a later fsync can succeed although the
    /// pages the failed one covered were dropped, so from now on nothing
    /// is ever reported durable again (the engine is poisoned, too).
    failed: bool,
}

/// The longest a group commit leader waits for other writers to append.
const MAX_COMMIT_DELAY: Duration = Duration::from_micros(500);

/// A group commit leader stops gathering once no writer has arrived for
/// this long.
const GATHER_QUIET: Duration = Duration::from_micros(20);

/// Counts a writer in [`Durability::writers`] from the start of its write
/// call until it has waited for its fsync ([`Shared::wait_durable`] lets it
/// go under the state lock) or, on an early return, until it is dropped.
struct ActiveWriter<'a>(Option<&'a Durability>);

impl<'a> ActiveWriter<'a> {
    fn enter(durability: &'a Durability) -> Self {
        // No lock needed: a leader that misses this writer only gathers
        // fewer; it is the decrements that can end a leader's wait.
        durability.writers.fetch_add(1, Ordering::Relaxed);
        ActiveWriter(Some(durability))
    }

    /// Stops counting the writer; the caller holds the state lock.
    fn leave(mut self, _state: &SyncState) {
        if let Some(durability) = self.0.take() {
            durability.writers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ActiveWriter<'_> {
    fn drop(&mut self) {
        if let Some(durability) = self.0.take() {
            let _state = durability.state.lock();
            durability.writers.fetch_sub(1, Ordering::Relaxed);
            // A leader may be gathering, waiting for this writer.
            durability.waiting.notify_one();
        }
    }
}

/// Counts and sizes, from the index (no disk reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub documents: u64,
    pub inputs: u64,
    pub outputs: u64,
    /// Segment files, the active one included.
    pub segments: u64,
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
        let reserved_ids = keydir.next_id();

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
            index: RwLock::new(Index { keydir, files, active: segment, merged, hinted }),
            writer: Mutex::new(Writer {
                segment,
                file,
                len,
                appended: 0,
                reserved_ids,
                buf: Vec::new(),
                scratch: Vec::new(),
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
            tasks.push(Ticker::start(
                "stratum-compactor",
                Arc::downgrade(&shared),
                compaction.interval,
                move |shared| {
                    if compaction.policy.should_compact(shared.index.read().keydir.segments().values())
                        && let Err(e) = shared.compact()
                    {
                        tracing::warn!(error = %e, "background compaction failed");
                    }
                    if let Err(e) = shared.write_hints() {
                        tracing::warn!(error = %e, "writing hint files failed");
                    }
                },
            ));
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

    // ----- documents -------------------------------------------------------

    /// Stores a new document and returns its id.
    pub fn create_document(&self, blob: &[u8], columns: Columns) -> Result<Id> {
        let limits = &self.shared.options.limits;
        limits.check_blob(blob)?;
        limits.check_columns(&columns)?;
        self.shared.write(|keydir| Ok((keydir.next_id(), Mutation::CreateDocument { columns: &columns, blob })))
    }

    /// The document's blob: one index lookup and one read of its record
    /// (a copy out of the segment's memory map, or a positioned read).
    pub fn document_blob(&self, id: Id) -> Result<Vec<u8>> {
        answered(self.shared.blob(id, Wait::Yes))
    }

    /// [`Engine::document_blob`] if it can be answered without waiting:
    /// `None` if a writer holds the index, the record is not in memory, or
    /// it is over 1 MiB. It takes no lock that it would wait for and reads
    /// no byte that is not in memory, so an async task may call it and fall
    /// back to a blocking thread when it gets `None`. (It may unmap a
    /// segment's old map, if it held the last view of it.)
    pub fn document_blob_now(&self, id: Id) -> Option<Result<Vec<u8>>> {
        without_waiting(self.shared.blob(id, Wait::No))
    }

    /// The document's columns, from memory.
    pub fn document_columns(&self, id: Id) -> Result<Columns> {
        answered(self.shared.columns(id, Wait::Yes))
    }

    /// [`Engine::document_columns`] unless a writer holds the index.
    pub fn document_columns_now(&self, id: Id) -> Option<Result<Columns>> {
        without_waiting(self.shared.columns(id, Wait::No))
    }

    /// Replaces the document's blob.
    pub fn update_blob(&self, id: Id, blob: &[u8]) -> Result<()> {
        self.shared.options.limits.check_blob(blob)?;
        self.shared.write(|keydir| {
            keydir.document(id)?;
            Ok((id, Mutation::SetBlob { blob }))
        })?;
        Ok(())
    }

    /// Sets (adds or replaces) one column of the document.
    pub fn set_column(&self, id: Id, name: &str, value: &str) -> Result<()> {
        let limits = &self.shared.options.limits;
        limits.check_column(name, value)?;
        let mut columns = Columns::new();
        self.shared.write(|keydir| {
            columns = keydir.document(id)?.columns();
            columns.insert(name.to_owned(), value.to_owned());
            limits.check_columns(&columns)?;
            Ok((id, Mutation::SetColumns { columns: &columns }))
        })?;
        Ok(())
    }

    /// Deletes the document with its inputs and their outputs.
    pub fn delete_document(&self, id: Id) -> Result<()> {
        self.shared.write(|keydir| {
            keydir.document(id)?;
            Ok((id, Mutation::DeleteDocument))
        })?;
        Ok(())
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
        self.shared.options.limits.check_value(value)?;
        self.shared.write(|keydir| {
            keydir.document(document)?;
            Ok((keydir.next_id(), Mutation::PutInput { document, value }))
        })
    }

    /// The value of one input.
    pub fn input(&self, document: Id, input: Id) -> Result<Value> {
        answered(self.shared.value(input, |k| Ok(k.input(document, input)?.value), Wait::Yes))
    }

    /// [`Engine::input`] if it can be answered without waiting (see
    /// [`Engine::document_blob_now`]).
    pub fn input_now(&self, document: Id, input: Id) -> Option<Result<Value>> {
        without_waiting(self.shared.value(input, |k| Ok(k.input(document, input)?.value), Wait::No))
    }

    /// Every input of the document, in chain order, with its value.
    pub fn inputs(&self, document: Id) -> Result<Vec<(Id, Value)>> {
        self.inputs_after(document, 0, usize::MAX)
    }

    /// Up to `limit` inputs of the document that come after input `after`
    /// in the chain (0 for the start), in chain order, with their values.
    pub fn inputs_after(&self, document: Id, after: Id, limit: usize) -> Result<Vec<(Id, Value)>> {
        let located: Vec<(Id, Location, Arc<dyn FileHandle>)> = {
            let index = self.shared.index.read();
            let doc = index.keydir.document(document)?;
            doc.inputs_after(after)
                .iter()
                .take(limit)
                .map(|input| Ok((input.id, input.value, index.file(input.value)?)))
                .collect::<Result<_>>()?
        };
        located.into_iter().map(|(id, location, file)| Ok((id, self.shared.read_value(location, &file, id)?))).collect()
    }

    /// Replaces an input's value.
    pub fn update_input(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.shared.options.limits.check_value(value)?;
        self.shared.write(|keydir| {
            keydir.input(document, input)?;
            Ok((input, Mutation::PutInput { document, value }))
        })?;
        Ok(())
    }

    /// Deletes an input and its output; the chain keeps its order.
    pub fn delete_input(&self, document: Id, input: Id) -> Result<()> {
        self.shared.write(|keydir| {
            keydir.input(document, input)?;
            Ok((input, Mutation::DeleteInput { document }))
        })?;
        Ok(())
    }

    // ----- outputs ---------------------------------------------------------

    /// Sets the output of an input, replacing any output it had.
    pub fn set_output(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.shared.options.limits.check_value(value)?;
        self.shared.write(|keydir| {
            keydir.input(document, input)?;
            Ok((input, Mutation::PutOutput { document, value }))
        })?;
        Ok(())
    }

    /// The output of an input.
    pub fn output(&self, document: Id, input: Id) -> Result<Value> {
        answered(self.shared.value(input, |k| Ok(k.output(document, input)?), Wait::Yes))
    }

    /// [`Engine::output`] if it can be answered without waiting (see
    /// [`Engine::document_blob_now`]).
    pub fn output_now(&self, document: Id, input: Id) -> Option<Result<Value>> {
        without_waiting(self.shared.value(input, |k| Ok(k.output(document, input)?), Wait::No))
    }

    /// Replaces the output of an input that has one.
    pub fn update_output(&self, document: Id, input: Id, value: &Value) -> Result<()> {
        self.shared.options.limits.check_value(value)?;
        self.shared.write(|keydir| {
            keydir.output(document, input)?;
            Ok((input, Mutation::PutOutput { document, value }))
        })?;
        Ok(())
    }

    /// Removes the output of an input.
    pub fn delete_output(&self, document: Id, input: Id) -> Result<()> {
        self.shared.write(|keydir| {
            keydir.output(document, input)?;
            Ok((input, Mutation::DeleteOutput { document }))
        })?;
        Ok(())
    }

    // ----- administration --------------------------------------------------

    /// Makes every acknowledged write durable, whatever the sync policy.
    pub fn flush(&self) -> Result<()> {
        let position = self.shared.writer.lock().appended;
        self.shared.wait_durable(position, None)
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
        self.shared.compact()
    }

    /// Writes the hint file of every sealed segment that lacks one, so the
    /// next open reads hints instead of whole segments. The background
    /// compactor calls this on every tick. Returns how many were written.
    pub fn write_hints(&self) -> Result<u64> {
        self.shared.write_hints()
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

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_tasks();
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "final flush on close failed");
        }
    }
}

impl Index {
    fn path_of(&self, dir: &Path, segment: SegmentId) -> PathBuf {
        if segment == self.active {
            dir.join(ACTIVE_NAME)
        } else if Some(segment) == self.merged {
            dir.join(MERGED_NAME)
        } else {
            dir.join(segment::sealed_name(segment))
        }
    }

    fn file(&self, location: Location) -> Result<Arc<dyn FileHandle>> {
        self.files.get(&location.segment()).cloned().ok_or_else(|| Error::Corrupt {
            file: PathBuf::from(segment::sealed_name(location.segment())),
            offset: location.offset(),
            reason: "the index points into a segment that is not open".into(),
        })
    }
}

impl Shared {
    /// Checks a write against the index, appends its record and applies it.
    ///
    /// `plan` sees the index as it is under the writer lock and returns the
    /// record's id and the mutation, or why the write is refused.
    fn write<'m>(&self, plan: impl FnOnce(&KeyDir) -> Result<(Id, Mutation<'m>)>) -> Result<Id> {
        let always = self.options.sync == SyncPolicy::Always;
        let active = always.then(|| ActiveWriter::enter(&self.durability));
        let mut w = self.writer.lock();
        self.check_writable()?;
        let (id, mutation) = plan(&self.index.read().keydir)?;
        if id >= w.reserved_ids {
            self.reserve_ids(&mut w, id)?;
        }
        self.append(&mut w, id, &mutation)?;
        let position = w.appended;
        drop(w);
        if let Some(active) = active {
            self.wait_durable(position, Some(active))?;
        }
        Ok(id)
    }

    /// Makes a block of ids from `first` on durable as handed out before
    /// the first of them is, so that ids stay unique across a crash that
    /// loses writes (under `none`, a create can be acknowledged and lost).
    fn reserve_ids(&self, w: &mut Writer, first: Id) -> Result<()> {
        let below = first.saturating_add(ID_RESERVATION);
        self.append(w, 0, &Mutation::ReserveIds { below })?;
        if self.options.sync != SyncPolicy::Always {
            // Under `always` the fsync of the write that needs the ids covers
            // this record too; otherwise sync it now.
            let synced = w.file.sync_data();
            if let Err(e) = synced {
                let e = Error::io(format!("syncing segment {}", w.segment))(e);
                self.set_poison(&e);
                return Err(e);
            }
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.mark_durable(w.appended);
        }
        w.reserved_ids = below;
        Ok(())
    }

    /// Appends one record to the active segment (sealing it first if the
    /// record would take it past the segment size) and applies it to the
    /// index. A failed append poisons the engine.
    fn append(&self, w: &mut Writer, id: Id, mutation: &Mutation<'_>) -> Result<()> {
        let seq = self.index.read().keydir.next_seq();
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let len = encode_record(&mut buf, seq, id, mutation) as u64;
        if w.len > SEGMENT_HEADER_LEN as u64
            && w.len + len > self.options.segment_size
            && let Err(e) = self.rotate(w)
        {
            w.buf = buf;
            return Err(e);
        }
        let offset = w.len;
        let appended = w.file.write_all_at(&buf, offset);
        w.buf = buf;
        if let Err(e) = appended {
            // A partial record must not stay behind: a full disk is an error
            // for this writer, never a torn record for the next one.
            let _ = w.file.set_len(offset);
            let e = Error::io(format!("appending to segment {}", w.segment))(e);
            self.set_poison(&e);
            return Err(e);
        }
        w.len += len;
        w.appended += len;
        let location =
            Location::new(w.segment, offset, len as u32).expect("active segments stay far below the largest offset");
        let effect = mutation.effect(&mut w.scratch);
        let applied = self.index.write().keydir.apply(RecordMeta { seq, id, location }, effect);
        debug_assert_eq!(applied, stratum_core::Applied::Changed, "a checked write was ignored");
        Ok(())
    }

    /// Seals the active segment and opens the next one. Runs under the
    /// writer lock; any failure poisons the engine.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let result = (|| {
            let sealed_path = self.dir.join(segment::sealed_name(w.segment));
            let active_path = self.dir.join(ACTIVE_NAME);
            let next = w.segment.next().ok_or_else(|| Error::Options("segment ids exhausted".into()))?;
            w.file.sync_data().map_err(Error::io(format!("syncing {}", active_path.display())))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.mark_durable(w.appended);
            let rename = format!("sealing {} as {}", active_path.display(), sealed_path.display());
            self.fs.rename(&active_path, &sealed_path).map_err(Error::io(rename))?;
            self.fs.sync_dir(&self.dir).map_err(Error::io(format!("syncing directory {}", self.dir.display())))?;
            let file = segment::create_active(self.fs.as_ref(), &self.dir, next)?;
            {
                let mut index = self.index.write();
                index.files.insert(next, file.clone());
                index.active = next;
            }
            tracing::debug!(sealed = w.segment.get(), bytes = w.len, "sealed segment");
            w.segment = next;
            w.file = file;
            w.len = SEGMENT_HEADER_LEN as u64;
            Ok(())
        })();
        if let Err(e) = &result {
            self.set_poison(e);
        }
        result
    }

    fn check_writable(&self) -> Result<()> {
        match &*self.poison.lock() {
            Some(reason) => Err(Error::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    fn set_poison(&self, cause: &Error) {
        let mut poison = self.poison.lock();
        if poison.is_none() {
            tracing::error!(error = %cause, "refusing further writes");
            *poison = Some(cause.to_string().into());
        }
        drop(poison);
        self.durability.synced.notify_all();
    }

    fn mark_durable(&self, position: u64) {
        let mut state = self.durability.state.lock();
        if state.failed {
            return;
        }
        state.durable = state.durable.max(position);
        drop(state);
        self.durability.synced.notify_all();
    }

    /// Returns once every byte before `position` is durable: by an fsync
    /// this thread runs, or one another thread runs that covers it. A
    /// writer passes itself in, and stops counting as one when it returns.
    fn wait_durable(&self, position: u64, writer: Option<ActiveWriter<'_>>) -> Result<()> {
        let mut state = self.durability.state.lock();
        let result = if state.durable >= position {
            Ok(())
        } else {
            state.waiting += 1;
            self.durability.waiting.notify_one();
            let result = self.await_sync(&mut state, position);
            state.waiting -= 1;
            result
        };
        if let Some(writer) = writer {
            writer.leave(&state);
        }
        result
    }

    fn await_sync(&self, state: &mut MutexGuard<'_, SyncState>, position: u64) -> Result<()> {
        loop {
            if state.durable >= position {
                return Ok(());
            }
            self.check_writable()?;
            if state.syncing {
                self.durability.synced.wait(state);
                continue;
            }
            state.syncing = true;
            self.gather(state);
            let (result, target, took) = MutexGuard::unlocked(state, || {
                let (file, target) = {
                    let w = self.writer.lock();
                    (w.file.clone(), w.appended)
                };
                let started = Instant::now();
                (file.sync_data(), target, started.elapsed())
            });
            state.syncing = false;
            state.last_sync = took;
            match result {
                Ok(()) if !state.failed => {
                    self.fsyncs.fetch_add(1, Ordering::Relaxed);
                    state.durable = state.durable.max(target);
                    self.durability.synced.notify_all();
                }
                Ok(()) => self.check_writable()?,
                Err(e) => {
                    // Poisoned before the lock is let go: no thread can
                    // start another fsync and count the lost bytes durable.
                    state.failed = true;
                    let e = Error::io("syncing the active segment")(e);
                    self.set_poison(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Before an fsync: waits (briefly) for writers to append, so that the
    /// fsync covers them. A lone writer never waits. Otherwise the leader
    /// waits while writers inside a write call have not yet appended, and
    /// then while more keep arriving (writers that write again as soon as
    /// they are acknowledged arrive between two calls, when they are not
    /// inside one): until none arrives for [`GATHER_QUIET`], at most half
    /// the last fsync's time.
    fn gather(&self, state: &mut MutexGuard<'_, SyncState>) {
        let inside = || self.durability.writers.load(Ordering::Relaxed);
        if inside() <= 1 && state.last_batch <= 1 {
            state.last_batch = state.waiting;
            return;
        }
        let deadline = Instant::now() + (state.last_sync / 2).min(MAX_COMMIT_DELAY);
        loop {
            let until = if state.waiting < inside() { deadline } else { deadline.min(Instant::now() + GATHER_QUIET) };
            let arrived = state.waiting;
            let timed_out = self.durability.waiting.wait_until(state, until).timed_out();
            if Instant::now() >= deadline || (timed_out && state.waiting == arrived && state.waiting >= inside()) {
                break;
            }
        }
        state.last_batch = state.waiting;
    }

    /// The blob of document `id`; `None` only if `wait` is `No` and
    /// answering would wait.
    fn blob(&self, id: Id, wait: Wait) -> Result<Option<Vec<u8>>> {
        let Some((location, file)) = self.locate(wait, |k| Ok(k.document(id)?.blob))? else { return Ok(None) };
        let Some(bytes) = self.read_record(location, &file, wait)? else { return Ok(None) };
        let blob = check_record(&bytes, id).and_then(|record| match record.blob() {
            Ok(Some(blob)) => Ok(blob.to_vec()),
            Ok(None) => Err(format!("the index points at a {:?} record", record.kind)),
            Err(e) => Err(e.to_string()),
        });
        self.damaged_if_err(blob, location, wait)
    }

    fn columns(&self, id: Id, wait: Wait) -> Result<Option<Columns>> {
        let Some(index) = self.index_for(wait) else { return Ok(None) };
        Ok(Some(index.keydir.document(id)?.columns()))
    }

    /// The value in the input or output record that `find` locates.
    fn value(&self, id: Id, find: impl FnOnce(&KeyDir) -> Result<Location>, wait: Wait) -> Result<Option<Value>> {
        let Some((location, file)) = self.locate(wait, find)? else { return Ok(None) };
        let Some(bytes) = self.read_record(location, &file, wait)? else { return Ok(None) };
        self.damaged_if_err(value_of(&bytes, id), location, wait)
    }

    /// A read's outcome, given what was wrong with the record if anything:
    /// the error when the caller may wait; when it may not, `None`, so that
    /// it retries on a thread that may (building the error takes the index
    /// lock, to name the file).
    fn damaged_if_err<T>(
        &self,
        read: std::result::Result<T, String>,
        location: Location,
        wait: Wait,
    ) -> Result<Option<T>> {
        match (read, wait) {
            (Ok(found), _) => Ok(Some(found)),
            (Err(reason), Wait::Yes) => Err(self.corrupt(location, reason)),
            (Err(_), Wait::No) => Ok(None),
        }
    }

    fn index_for(&self, wait: Wait) -> Option<parking_lot::RwLockReadGuard<'_, Index>> {
        match wait {
            Wait::Yes => Some(self.index.read()),
            Wait::No => self.index.try_read(),
        }
    }

    /// Looks up a location and the file it is in, under one read lock;
    /// `None` if `wait` is `No` and a writer holds the lock.
    fn locate(
        &self,
        wait: Wait,
        find: impl FnOnce(&KeyDir) -> Result<Location>,
    ) -> Result<Option<(Location, Arc<dyn FileHandle>)>> {
        let Some(index) = self.index_for(wait) else { return Ok(None) };
        let location = find(&index.keydir)?;
        Ok(Some((location, index.file(location)?)))
    }

    /// The bytes of the record at `location`; `None` if `wait` is `No` and
    /// they are not all in memory, or too many to check and copy on an
    /// async worker.
    fn read_record(&self, location: Location, file: &Arc<dyn FileHandle>, wait: Wait) -> Result<Option<FileBytes>> {
        let (offset, len) = (location.offset(), location.len() as usize);
        match wait {
            Wait::No if len > MAX_READ_WITHOUT_WAITING => Ok(None),
            Wait::No => Ok(file.mapped(offset, len, true).map(FileBytes::Mapped)),
            Wait::Yes => file
                .read_bytes(offset, len, true)
                .map(Some)
                .map_err(|e| Error::io(format!("reading {}", self.path_of(location.segment()).display()))(e)),
        }
    }

    fn read(&self, location: Location, file: &Arc<dyn FileHandle>) -> Result<FileBytes> {
        answered(self.read_record(location, file, Wait::Yes))
    }

    /// Decodes a record read from `location`, which must be about `id`.
    fn decode<'b>(&self, bytes: &'b [u8], location: Location, id: Id) -> Result<Body<'b>> {
        let record = self.checked_record(bytes, location, id)?;
        record.body().map_err(|e| self.corrupt(location, e.to_string()))
    }

    /// The record read from `location`, checksum verified, which must be
    /// about `id`.
    fn checked_record<'b>(&self, bytes: &'b [u8], location: Location, id: Id) -> Result<RecordRef<'b>> {
        check_record(bytes, id).map_err(|reason| self.corrupt(location, reason))
    }

    fn corrupt(&self, location: Location, reason: String) -> Error {
        Error::Corrupt { file: self.path_of(location.segment()), offset: location.offset(), reason }
    }

    fn read_value(&self, location: Location, file: &Arc<dyn FileHandle>, id: Id) -> Result<Value> {
        value_of(&self.read(location, file)?, id).map_err(|reason| self.corrupt(location, reason))
    }

    fn unexpected(&self, location: Location, body: &Body<'_>) -> Error {
        self.corrupt(location, format!("the index points at a {:?} record", body.kind()))
    }

    fn path_of(&self, segment: SegmentId) -> PathBuf {
        self.index.read().path_of(&self.dir, segment)
    }
}

/// The largest record a read that may not wait answers: checking and
/// copying it takes about 100 µs of CPU; larger ones go to a thread that
/// may block.
const MAX_READ_WITHOUT_WAITING: usize = 1 << 20;

/// Whether a read may wait for the disk or for the index lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

/// The answer of a read that was allowed to wait.
fn answered<T>(read: Result<Option<T>>) -> Result<T> {
    read.map(|found| found.expect("a read that may wait always answers"))
}

/// The answer of a read that was not allowed to wait, if it has one. Only
/// a missing id is reported from here; any other error is found again,
/// and reported, by the caller's retry that may wait.
fn without_waiting<T>(read: Result<Option<T>>) -> Option<Result<T>> {
    match read {
        Ok(found) => found.map(Ok),
        Err(e @ Error::NotFound(_)) => Some(Err(e)),
        Err(_) => None,
    }
}

/// The record in `bytes`, checksum verified, which must be about `id`; or
/// what is wrong with it.
fn check_record(bytes: &[u8], id: Id) -> std::result::Result<RecordRef<'_>, String> {
    let record = decode_record(bytes).map_err(|e| e.to_string())?;
    if record.id != id {
        return Err(format!("record is about id {}, expected {id}", record.id));
    }
    Ok(record)
}

/// The value of the input or output record in `bytes`, which must be about
/// `id`; or what is wrong with it.
fn value_of(bytes: &[u8], id: Id) -> std::result::Result<Value, String> {
    let value = match check_record(bytes, id)?.body().map_err(|e| e.to_string())? {
        Body::PutInput { value, .. } | Body::PutOutput { value, .. } => value,
        other => return Err(format!("the index points at a {:?} record", other.kind())),
    };
    Value::decode(value).map_err(|e| format!("malformed value: {e}"))
}

/// A background thread that runs a task at an interval until stopped or
/// until the engine is gone.
#[derive(Debug)]
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Ticker {
    fn start(name: &str, shared: Weak<Shared>, every: Duration, task: impl Fn(&Shared) + Send + 'static) -> Ticker {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let Some(shared) = shared.upgrade() else { return };
                    task(&shared);
                }
            })
            .expect("spawning a background thread");
        Ticker { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
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
