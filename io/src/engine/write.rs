//! The write path: check a write against the index, encode its record,
//! append it to the active segment (sealing the segment first when it is
//! full), apply it to the index. Also id reservations and poisoning.

use std::sync::Arc;

use stratum_core::{
    Expect, Id, Location, Mutation, Op, Planned, SEGMENT_HEADER_LEN, SegmentId, decode_record, encode_record,
    expand_record, last_id_needed, plan_batch, reseal,
};

use super::commit::ActiveWriter;
use super::{Committed, Shared};
use crate::error::{Error, Result};
use crate::options::SyncPolicy;
use crate::segment::SegmentFile;
use stratum_core::ACTIVE_NAME;

use crate::segment;

/// The active segment's append state (lock 2 of the engine's lock order).
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) segment: SegmentId,
    pub(super) file: Arc<SegmentFile>,
    /// Length of the active segment: where the next record goes.
    pub(super) len: u64,
    /// Bytes appended since open, across segments: the log position that
    /// group commit counts in.
    pub(super) appended: u64,
    /// The log position just past the last record that is not a durability
    /// mark: an fsync that covers it has new records to mark durable.
    pub(super) records_end: u64,
    /// The `records_end` the last durability mark covered.
    pub(super) marked: u64,
    /// The record being appended.
    pub(super) buf: Vec<u8>,
    /// The batch being appended (apart from `buf`: a batch may need a
    /// reservation appended before it).
    pub(super) frame: Vec<u8>,
}

/// The largest batch buffer kept between writes.
const KEPT_FRAME_BYTES: usize = 4 << 20;

impl Shared {
    /// Checks a batch of operations against the index (and its
    /// preconditions), appends the records that carry it out (one record,
    /// or one batch frame) and applies them to the index under one lock.
    /// Under `always`, returns once an fsync covers them.
    pub(super) fn write(&self, ops: &[Op<'_>], expect: &[Expect]) -> Result<Committed> {
        let always = self.options.sync == SyncPolicy::Always;
        let active = always.then(|| ActiveWriter::enter(&self.durability));
        let mut w = self.writer.lock();
        self.check_writable()?;
        let mut buf = std::mem::take(&mut w.frame);
        let planned = self.plan(&mut w, ops, expect, &mut buf);
        let written = planned.and_then(|planned| {
            if planned.records > 0 {
                self.append_encoded(&mut w, &mut buf, true).inspect_err(|e| self.set_poison(e))?;
                w.records_end = w.appended;
            }
            Ok(planned)
        });
        buf.clear();
        // A large batch's buffer is not kept for the next write.
        if buf.capacity() > KEPT_FRAME_BYTES {
            buf = Vec::new();
        }
        w.frame = buf;
        let planned = written?;
        let committed = {
            let index = self.index.read();
            let versions = planned
                .documents
                .iter()
                .filter_map(|&id| index.keydir.document(id).ok().map(|doc| (id, doc.version())))
                .collect();
            Committed { created: planned.created, versions }
        };
        let position = w.appended;
        drop(w);
        if let Some(active) = active {
            self.wait_durable(position, Some(active))?;
        }
        Ok(committed)
    }

    /// Plans a batch into `buf`, reserving ids first if it hands out ids
    /// no reservation covers yet (and planning again after it: the
    /// reservation takes a sequence number and may seal the segment).
    fn plan(&self, w: &mut Writer, ops: &[Op<'_>], expect: &[Expect], buf: &mut Vec<u8>) -> Result<Planned> {
        loop {
            let reservation = {
                let index = self.index.read();
                let keydir = &index.keydir;
                match last_id_needed(keydir.next_id(), ops).and_then(|last| keydir.reservation_needed(last)) {
                    None => return Ok(plan_batch(keydir, ops, expect, &self.options.limits, w.file.salt(), buf)?),
                    Some(below) => below,
                }
            };
            // Checked before the reservation is written: a refused batch
            // writes nothing at all.
            {
                let index = self.index.read();
                plan_batch(&index.keydir, ops, expect, &self.options.limits, w.file.salt(), buf)?;
                buf.clear();
            }
            self.reserve_ids(w, reservation)?;
        }
    }

    /// Makes a block of ids from `first` on durable as handed out before
    /// the first of them is, so that ids stay unique across a crash that
    /// loses writes (under `none`, a create can be acknowledged and lost).
    pub(super) fn reserve_ids(&self, w: &mut Writer, below: Id) -> Result<()> {
        self.append(w, 0, &Mutation::ReserveIds { below })?;
        w.records_end = w.appended;
        if self.options.sync != SyncPolicy::Always {
            // Under `always` the fsync of the write that needs the ids covers
            // this record too; otherwise sync it now.
            let (segment, len, records) = (w.segment, w.len, w.records_end);
            self.sync_active(w)?;
            self.mark_durable_upto(w, segment, len, records);
        }
        Ok(())
    }

    /// After an fsync of `segment` that covered its first `upto` bytes and
    /// the log up to `records`, appends a durability mark saying so, unless
    /// the segment has been sealed since (a sealed segment is synced whole)
    /// or a mark already covers those records. Recovery uses the marks to
    /// tell damage to synced records from a torn write (see
    /// `stratum_core::judge_bad_tail`), so the group commit leader appends
    /// one before it lets the writers the fsync covered return. A mark that
    /// cannot be appended is only logged: the writes it would cover are
    /// durable all the same.
    pub(super) fn mark_durable_upto(&self, w: &mut Writer, segment: SegmentId, upto: u64, records: u64) {
        // Not into a poisoned engine's segment: a rotation that failed past
        // its rename left `w` on a file that is sealed now.
        if w.segment != segment
            || records <= w.marked
            || self.durability.state.lock().failed.is_some()
            || self.poison.lock().is_some()
        {
            return;
        }
        match self.append_unrotated(w, 0, &Mutation::Durable { upto }) {
            Ok(()) => w.marked = records,
            Err(e) => tracing::warn!(error = %e, "cannot append a durability mark"),
        }
    }

    /// Appends one record to the active segment (sealing it first if the
    /// record would take it past `segment_bytes`) and applies it to the
    /// index. A failed append poisons the engine.
    pub(super) fn append(&self, w: &mut Writer, id: Id, mutation: &Mutation<'_>) -> Result<()> {
        self.append_record(w, id, mutation, true).inspect_err(|e| self.set_poison(e))
    }

    /// Appends a durability mark: never rotates, and a failure does not
    /// poison (nothing a client asked for is lost with it).
    fn append_unrotated(&self, w: &mut Writer, id: Id, mutation: &Mutation<'_>) -> Result<()> {
        self.append_record(w, id, mutation, false)
    }

    fn append_record(&self, w: &mut Writer, id: Id, mutation: &Mutation<'_>, may_rotate: bool) -> Result<()> {
        let seq = self.index.read().keydir.next_seq();
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        encode_record(&mut buf, w.file.salt(), seq, id, mutation);
        let appended = self.append_encoded(w, &mut buf, may_rotate);
        w.buf = buf;
        appended
    }

    /// Appends `record`, one encoded record (a batch frame, perhaps)
    /// sealed for the active segment, and applies it to the index, as
    /// recovery would. If it would take the segment past `segment_bytes`
    /// and `may_rotate`, the segment is sealed first and the record sealed
    /// again for the new one.
    fn append_encoded(&self, w: &mut Writer, record: &mut [u8], may_rotate: bool) -> Result<()> {
        let len = record.len() as u64;
        if may_rotate && w.len > SEGMENT_HEADER_LEN as u64 && w.len + len > self.options.segment_bytes {
            self.rotate(w)?;
            // The new segment has a salt of its own.
            reseal(record, w.file.salt());
        }
        debug_assert_eq!(w.len, w.file.readable(), "the writer and its segment agree on the end");
        // A failed append cuts off what it wrote: a full disk is an error
        // for this writer, never a torn record for the next one.
        let offset = w.file.append(record).map_err(Error::io(format!("appending to segment {}", w.segment)))?;
        w.len += len;
        w.appended += len;
        let location =
            Location::new(w.segment, offset, len as u32).expect("active segments stay far below the largest offset");
        // Checked and taken apart before the index lock: readers never
        // wait for a checksum.
        let salt = w.file.salt();
        let parsed = decode_record(record, salt).expect("a record this engine just encoded decodes");
        let body = parsed.body().expect("a record this engine just encoded has a valid body");
        let records: Vec<_> =
            expand_record(&parsed, body, location, salt).expect("a batch this engine just encoded is whole").collect();
        let mut index = self.index.write();
        for (meta, effect) in records {
            let applied = index.keydir.apply(meta, effect);
            debug_assert_eq!(applied, stratum_core::Applied::Changed, "a checked write was ignored");
        }
        Ok(())
    }

    /// Seals the active segment and opens the next one. Runs under the
    /// writer lock; any failure poisons the engine.
    pub(super) fn rotate(&self, w: &mut Writer) -> Result<()> {
        let result = (|| {
            let sealed_path = self.dir.join(stratum_core::sealed_name(w.segment));
            let active_path = self.dir.join(ACTIVE_NAME);
            let next = w.segment.next().ok_or(Error::SegmentIdsExhausted)?;
            self.sync_active(w)?;
            // A sealed segment is synced whole: it takes no more marks.
            w.marked = w.records_end;
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

    pub(super) fn check_writable(&self) -> Result<()> {
        match &*self.poison.lock() {
            Some(reason) => Err(Error::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    pub(super) fn set_poison(&self, cause: &Error) {
        let mut poison = self.poison.lock();
        if poison.is_none() {
            tracing::error!(error = %cause, "refusing further writes");
            *poison = Some(cause.to_string().into());
        }
        drop(poison);
        self.durability.synced.notify_all();
    }
}
