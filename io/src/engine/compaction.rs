//! Compaction as the io layer carries it out: ask the core whether to
//! compact ([`choose_compaction`]), seal, plan (in the core), write
//! `merged.seg.tmp` as the core's [`MergeWriter`] lays it out, commit by
//! rename, move the index, delete what was replaced. Also the hint files of
//! sealed segments.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stratum_core::{
    CompactionChoice, CompactionPlan, MergeError, MergeWriter, MergedSegment, SEGMENT_HEADER_LEN, SegmentId,
    SegmentUsage, Trigger, choose_compaction,
};

use super::Shared;
use crate::error::{Error, Result};
use stratum_core::{MERGED_NAME, MERGED_TMP_NAME};

use crate::segment::{self, SegmentBuilder, SegmentFile};

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments merged (0 when there was no garbage to reclaim).
    pub segments_in: u64,
    /// Bytes of the merged segments' records.
    pub bytes_in: u64,
    /// Bytes of the merged segment's records.
    pub bytes_out: u64,
    /// Records in the segments merged.
    pub records_in: u64,
    /// Records in the merged segment, its checkpoint included.
    pub records_out: u64,
    /// Old versions, tombstones and deleted records left behind.
    pub records_dropped: u64,
    /// Records overwritten while the compaction ran (their copies are garbage).
    pub stale: u64,
    /// Wall-clock time from the decision to compact to the old segments'
    /// removal.
    pub elapsed: Duration,
}

impl Shared {
    /// Compacts if the core's [`choose_compaction`] says so for `trigger`
    /// (see [`super::Engine::compact`]).
    pub(super) fn compact(&self, trigger: Trigger) -> Result<CompactionReport> {
        let _running = self.compacting.lock();
        let started = Instant::now();
        let Some((plan, old_merged, usage)) = self.seal_and_plan(trigger)? else {
            return Ok(CompactionReport::default());
        };
        let tmp = self.dir.join(MERGED_TMP_NAME);
        let written = self.write_merged(&plan, &tmp);
        let (file, merged) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = self.fs.remove(&tmp);
                return Err(e);
            }
        };

        // The old merged segment's hint must not outlive it.
        let target = self.dir.join(MERGED_NAME);
        segment::remove_if_present(self.fs.as_ref(), &segment::hint_path(&target))?;

        // The commit point: once the rename is durable, recovery uses the
        // merged segment and deletes whatever it replaced.
        let committed = self
            .fs
            .rename(&tmp, &target)
            .map_err(Error::io(format!("renaming {} to {}", tmp.display(), target.display())))
            .and_then(|()| {
                self.fs.sync_dir(&self.dir).map_err(Error::io(format!("syncing directory {}", self.dir.display())))
            });
        if let Err(e) = committed {
            // Whether the rename reached the disk is unknown: stop writing.
            self.set_poison(&e);
            return Err(e);
        }

        let installed = {
            let mut index = self.index.write();
            for id in &plan.sources {
                index.files.remove(id);
            }
            index.files.insert(plan.merged, file.clone());
            index.merged = Some(plan.merged);
            index.merged_covers_from = Some(plan.covers_from);
            for id in &plan.sources {
                index.hinted.remove(id);
            }
            let installed = index.keydir.install_compaction(&plan, &merged);
            debug_assert_eq!(index.keydir.check_invariants(), Ok(()), "a compaction install broke the index");
            installed
        };
        for id in plan.sources.iter().filter(|&&id| Some(id) != old_merged) {
            let path = self.dir.join(stratum_core::sealed_name(*id));
            if let Err(e) = self.fs.remove(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a compacted segment; recovery will");
            }
            let _ = self.fs.remove(&segment::hint_path(&path));
        }
        match segment::write_snapshot(self.fs.as_ref(), &target, &file, plan.merged) {
            Ok(()) => {
                self.index.write().hinted.insert(plan.merged);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the merged segment's hint file"),
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "cannot sync the data directory after removing compacted segments");
        }

        let report = CompactionReport {
            segments_in: plan.sources.len() as u64,
            bytes_in: usage.total_bytes,
            bytes_out: merged.bytes,
            records_in: usage.records,
            records_out: merged.records,
            records_dropped: usage.records.saturating_sub(merged.records),
            stale: installed.stale,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            segments_in = report.segments_in,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            records_dropped = report.records_dropped,
            stale = report.stale,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "compacted"
        );
        self.compactions.fetch_add(1, Ordering::Relaxed);
        *self.last_compaction.lock() = Some(report);
        Ok(report)
    }

    /// See [`Engine::write_hints`].
    pub(super) fn write_hints(&self) -> Result<u64> {
        let _running = self.compacting.lock();
        let missing: Vec<(SegmentId, PathBuf, Arc<SegmentFile>, bool)> = {
            let index = self.index.read();
            index
                .files
                .iter()
                .filter(|&(&id, _)| id != index.active && !index.hinted.contains(&id))
                .map(|(&id, file)| (id, index.path_of(&self.dir, id), file.clone(), Some(id) == index.merged))
                .collect()
        };
        for (id, path, file, merged) in &missing {
            if *merged {
                segment::write_snapshot(self.fs.as_ref(), path, file, *id)?;
            } else {
                segment::write_hint(self.fs.as_ref(), path, file, *id)?;
            }
            self.index.write().hinted.insert(*id);
        }
        Ok(missing.len() as u64)
    }

    /// Under the writer lock: asks the core whether to compact; if so,
    /// seals the active segment and plans the merge, so the plan is exactly
    /// the content of the sealed segments. `None` when there is nothing to
    /// do.
    fn seal_and_plan(&self, trigger: Trigger) -> Result<Option<(CompactionPlan, Option<SegmentId>, SegmentUsage)>> {
        let mut w = self.writer.lock();
        self.check_writable()?;
        let choice = choose_compaction(self.index.read().keydir.segments().values(), trigger);
        if choice == CompactionChoice::DoNothing {
            return Ok(None);
        }
        if w.len > SEGMENT_HEADER_LEN as u64 {
            self.rotate(&mut w)?;
        }
        // Every segment but the (now empty) active one is a source: the
        // choice above was made over all of them.
        let index = self.index.read();
        let sealed: Vec<SegmentId> = index.files.keys().copied().filter(|&id| id != index.active).collect();
        let mut usage = SegmentUsage::default();
        for u in sealed.iter().filter_map(|id| index.keydir.segments().get(id)) {
            usage.total_bytes += u.total_bytes;
            usage.live_bytes += u.live_bytes;
            usage.records += u.records;
        }
        let merged = index.merged;
        // Planning copies the index: under the read lock, so readers go on.
        let Some(mut plan) = index.keydir.plan_compaction(sealed) else { return Ok(None) };
        // The merged segment replaces everything the current one did.
        if let Some(from) = index.merged_covers_from.filter(|_| merged.is_some_and(|m| plan.sources.contains(&m))) {
            plan.covers_from = plan.covers_from.min(from);
        }
        drop(index);
        self.index.write().keydir.start_compaction(&plan);
        Ok(Some((plan, merged, usage)))
    }

    /// Writes and syncs the merged segment under `tmp`, laid out by the
    /// core's [`MergeWriter`]: this only reads what it names and writes what
    /// it produces.
    fn write_merged(&self, plan: &CompactionPlan, tmp: &Path) -> Result<(Arc<SegmentFile>, MergedSegment)> {
        segment::remove_if_present(self.fs.as_ref(), tmp)?;
        let file = self.fs.create_new(tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let mut out = SegmentBuilder::new(file, tmp.to_path_buf());
        let salt = segment::fresh_salt()?;
        let mut merge = MergeWriter::new(plan, salt, out.buffer()).map_err(|e| self.merge_error(e))?;
        while let Some(from) = merge.next_source() {
            let file = self.index.read().file(from)?;
            let bytes = self.read(from, &file)?;
            merge.copy(&bytes, file.salt(), out.buffer()).map_err(|e| self.merge_error(e))?;
            out.maybe_flush()?;
        }
        let merged = merge.finish();
        let written = out.len();
        Ok((SegmentFile::new(out.finish()?, salt, written), merged))
    }

    fn merge_error(&self, error: MergeError) -> Error {
        match error {
            MergeError::Damaged { at, defect } => self.corrupt(at, defect),
            MergeError::TooLarge => Error::MergedTooLarge,
        }
    }
}
