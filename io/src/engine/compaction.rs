//! Compaction as the io layer carries it out: seal, plan (in the core),
//! write `merged.seg.tmp`, commit by rename, move the index, delete what was
//! replaced. Also the hint files of sealed segments.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stratum_core::{
    Body, CompactionPlan, Location, MergedSegment, Mutation, Relocation, SEGMENT_HEADER_LEN, SegmentId, SegmentUsage,
    Target, encode_record,
};

use super::Shared;
use crate::error::{Error, Result};
use crate::fs::FileHandle;
use crate::segment::{self, MERGED_NAME, MERGED_TMP_NAME, SegmentBuilder};

/// What one compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments merged (0 when there was no garbage to reclaim).
    pub segments_in: u64,
    /// Bytes of the merged segments' records.
    pub bytes_in: u64,
    /// Bytes of the merged segment's records.
    pub bytes_out: u64,
    pub records_in: u64,
    pub records_out: u64,
    /// Old versions, tombstones and deleted records left behind.
    pub records_dropped: u64,
    /// Records overwritten while the compaction ran (their copies are garbage).
    pub stale: u64,
    pub elapsed: Duration,
}

impl Shared {
    /// See [`Engine::compact`].
    pub(super) fn compact(&self) -> Result<CompactionReport> {
        let _running = self.compacting.lock();
        let started = Instant::now();
        let Some((plan, old_merged, usage)) = self.seal_and_plan()? else {
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
            for id in &plan.inputs {
                index.files.remove(id);
            }
            index.files.insert(plan.output, file.clone());
            index.merged = Some(plan.output);
            for id in &plan.inputs {
                index.hinted.remove(id);
            }
            index.keydir.install_compaction(&plan, &merged)
        };
        for id in plan.inputs.iter().filter(|&&id| Some(id) != old_merged) {
            let path = self.dir.join(segment::sealed_name(*id));
            if let Err(e) = self.fs.remove(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a compacted segment; recovery will");
            }
            let _ = self.fs.remove(&segment::hint_path(&path));
        }
        match segment::write_snapshot(self.fs.as_ref(), &target, file.as_ref(), plan.output) {
            Ok(()) => {
                self.index.write().hinted.insert(plan.output);
            }
            Err(e) => tracing::warn!(error = %e, "cannot write the merged segment's hint file"),
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "cannot sync the data directory after removing compacted segments");
        }

        let report = CompactionReport {
            segments_in: plan.inputs.len() as u64,
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
        let missing: Vec<(SegmentId, PathBuf, Arc<dyn FileHandle>, bool)> = {
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
                segment::write_snapshot(self.fs.as_ref(), path, file.as_ref(), *id)?;
            } else {
                segment::write_hint(self.fs.as_ref(), path, file.as_ref(), *id)?;
            }
            self.index.write().hinted.insert(*id);
        }
        Ok(missing.len() as u64)
    }

    /// Seals the active segment and snapshots the index, under the writer
    /// lock, so the snapshot is exactly the content of the sealed segments.
    /// `None` when the sealed segments hold no garbage.
    fn seal_and_plan(&self) -> Result<Option<(CompactionPlan, Option<SegmentId>, SegmentUsage)>> {
        let mut w = self.writer.lock();
        self.check_writable()?;
        if w.len > SEGMENT_HEADER_LEN as u64 {
            self.rotate(&mut w)?;
        }
        let index = self.index.read();
        let sealed: Vec<SegmentId> = index.files.keys().copied().filter(|&id| id != index.active).collect();
        let mut usage = SegmentUsage::default();
        for u in sealed.iter().filter_map(|id| index.keydir.segments().get(id)) {
            usage.total_bytes += u.total_bytes;
            usage.live_bytes += u.live_bytes;
            usage.records += u.records;
        }
        if usage.garbage_bytes() == 0 {
            return Ok(None);
        }
        Ok(index.keydir.plan_compaction(sealed).map(|plan| (plan, index.merged, usage)))
    }

    /// Writes and syncs the merged segment under `tmp`.
    fn write_merged(&self, plan: &CompactionPlan, tmp: &Path) -> Result<(Arc<dyn FileHandle>, MergedSegment)> {
        segment::remove_if_present(self.fs.as_ref(), tmp)?;
        let file = self.fs.create_new(tmp).map_err(Error::io(format!("creating {}", tmp.display())))?;
        let mut out = SegmentBuilder::new(file, tmp.to_path_buf(), plan.output);
        let mut merged = MergedSegment::default();
        let place = |out: &mut SegmentBuilder, offset: u64, merged: &mut MergedSegment| -> Result<Location> {
            let len = out.len() - offset;
            merged.bytes += len;
            merged.records += 1;
            Location::new(plan.output, offset, len as u32).ok_or_else(|| Error::Io {
                context: "compacting".into(),
                source: std::io::Error::other("the live data does not fit one merged segment (1 TiB)"),
            })
        };

        let at = out.len();
        let checkpoint = Mutation::Checkpoint { covers_from: plan.covers_from(), next_id: plan.next_id };
        encode_record(out.buffer(), plan.seq, 0, &checkpoint);
        merged.checkpoint = Some(place(&mut out, at, &mut merged)?);

        for doc in &plan.documents {
            let file = self.index.read().file(doc.blob)?;
            let bytes = self.read(doc.blob, &file)?;
            let at = out.len();
            match self.decode(&bytes, doc.blob, doc.id)? {
                Body::CreateDocument { .. } if doc.columns_at == doc.blob => out.buffer().extend_from_slice(&bytes),
                Body::CreateDocument { blob, .. } | Body::SetBlob { blob } => {
                    let columns = doc.columns();
                    let rebuilt = Mutation::CreateDocument { columns: &columns, blob };
                    encode_record(out.buffer(), plan.seq, doc.id, &rebuilt);
                }
                other => return Err(self.unexpected(doc.blob, &other)),
            }
            let to = place(&mut out, at, &mut merged)?;
            merged.relocations.push(Relocation { target: Target::DocumentBlob(doc.id), from: doc.blob, to });
            merged.relocations.push(Relocation { target: Target::DocumentColumns(doc.id), from: doc.columns_at, to });
            for input in &doc.inputs {
                let (document, id) = (doc.id, input.id);
                let copies = [
                    (Target::InputValue { document, input: id }, Some(input.value)),
                    (Target::Output { document, input: id }, input.output),
                ];
                for (target, from) in copies {
                    let Some(from) = from else { continue };
                    let file = self.index.read().file(from)?;
                    let bytes = self.read(from, &file)?;
                    self.decode(&bytes, from, input.id)?;
                    let at = out.len();
                    out.buffer().extend_from_slice(&bytes);
                    let to = place(&mut out, at, &mut merged)?;
                    merged.relocations.push(Relocation { target, from, to });
                }
            }
            out.maybe_flush()?;
        }
        Ok((out.finish()?, merged))
    }
}
