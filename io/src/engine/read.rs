//! The read path: locate a record in the index, read its bytes (from the
//! segment's memory map or with a positioned read), and have the core check
//! and decode them (`record_blob`, `record_value`).

use std::path::PathBuf;
use std::sync::Arc;

use stratum_core::{Columns, Defect, Id, KeyDir, Location, SegmentId, Value, record_blob, record_value};

use super::index::Index;
use super::{Shared, Versioned};
use crate::error::{Error, Result};
use crate::fs::FileBytes;
use crate::segment::SegmentFile;

impl Shared {
    /// The blob of document `id`; `None` only if `wait` is `No` and
    /// answering would wait.
    pub(super) fn blob(&self, id: Id, wait: Wait) -> Result<Option<Versioned<Vec<u8>>>> {
        let Some((location, file, version)) = self.locate(wait, id, |k| Ok(k.document(id)?.blob))? else {
            return Ok(None);
        };
        let Some(bytes) = self.read_record(location, &file, wait)? else { return Ok(None) };
        let blob = self.damaged_if_err(record_blob(&bytes, file.salt(), id).map(<[u8]>::to_vec), location, wait)?;
        Ok(blob.map(|value| Versioned { value, version }))
    }

    pub(super) fn columns(&self, id: Id, wait: Wait) -> Result<Option<Versioned<Columns>>> {
        let Some(index) = self.index_for(wait) else { return Ok(None) };
        let doc = index.keydir.document(id)?;
        Ok(Some(Versioned { value: doc.columns(), version: doc.version() }))
    }

    /// The value in the input or output record of `document` that `find`
    /// locates, about input `id`.
    pub(super) fn value(
        &self,
        document: Id,
        id: Id,
        find: impl FnOnce(&KeyDir) -> Result<Location>,
        wait: Wait,
    ) -> Result<Option<Versioned<Value>>> {
        let Some((location, file, version)) = self.locate(wait, document, find)? else { return Ok(None) };
        let Some(bytes) = self.read_record(location, &file, wait)? else { return Ok(None) };
        let value = self.damaged_if_err(record_value(&bytes, file.salt(), id), location, wait)?;
        Ok(value.map(|value| Versioned { value, version }))
    }

    /// A read's outcome, given what was wrong with the record if anything:
    /// the error when the caller may wait; when it may not, `None`, so that
    /// it retries on a thread that may (building the error takes the index
    /// lock, to name the file).
    pub(super) fn damaged_if_err<T>(
        &self,
        read: std::result::Result<T, Defect>,
        location: Location,
        wait: Wait,
    ) -> Result<Option<T>> {
        match (read, wait) {
            (Ok(found), _) => Ok(Some(found)),
            (Err(defect), Wait::Yes) => Err(self.corrupt(location, defect)),
            (Err(_), Wait::No | Wait::Resident) => Ok(None),
        }
    }

    pub(super) fn index_for(&self, wait: Wait) -> Option<parking_lot::RwLockReadGuard<'_, Index>> {
        match wait {
            Wait::Yes => Some(self.index.read()),
            Wait::No | Wait::Resident => self.index.try_read(),
        }
    }

    /// Looks up a location, the file it is in and the version of
    /// `document`, under one read lock; `None` if `wait` is `No` and a
    /// writer holds the lock.
    pub(super) fn locate(
        &self,
        wait: Wait,
        document: Id,
        find: impl FnOnce(&KeyDir) -> Result<Location>,
    ) -> Result<Option<(Location, Arc<SegmentFile>, u64)>> {
        let Some(index) = self.index_for(wait) else { return Ok(None) };
        let location = find(&index.keydir)?;
        let version = index.keydir.document(document)?.version();
        Ok(Some((location, index.file(location)?, version)))
    }

    /// The bytes of the record at `location`; `None` if `wait` is `No` and
    /// they are not all in memory, or too many to check and copy on an
    /// async worker.
    pub(super) fn read_record(&self, location: Location, file: &SegmentFile, wait: Wait) -> Result<Option<FileBytes>> {
        let (offset, len) = (location.offset(), location.len() as usize);
        // Never touch a byte the file does not hold: through a map that
        // would be SIGBUS, not an error.
        if let Err(defect) = file.check(offset, len) {
            return match wait {
                Wait::Yes => Err(self.corrupt(location, defect)),
                Wait::No | Wait::Resident => Ok(None),
            };
        }
        match wait {
            Wait::No | Wait::Resident if len > MAX_READ_WITHOUT_WAITING => Ok(None),
            Wait::No => Ok(file.read_now(offset, len).map(FileBytes::Mapped)),
            Wait::Resident => Ok(file.read_resident(offset, len).map(FileBytes::Mapped)),
            Wait::Yes => file
                .read(offset, len)
                .map(Some)
                .map_err(|e| Error::io(format!("reading {}", self.path_of(location.segment()).display()))(e)),
        }
    }

    pub(super) fn read(&self, location: Location, file: &SegmentFile) -> Result<FileBytes> {
        answered(self.read_record(location, file, Wait::Yes))
    }

    /// The error for damage at `location`, naming its file.
    pub(super) fn corrupt(&self, location: Location, defect: Defect) -> Error {
        Error::Corrupt { file: self.path_of(location.segment()), offset: location.offset(), defect }
    }

    pub(super) fn read_value(&self, location: Location, file: &SegmentFile, id: Id) -> Result<Value> {
        record_value(&self.read(location, file)?, file.salt(), id).map_err(|defect| self.corrupt(location, defect))
    }

    pub(super) fn path_of(&self, segment: SegmentId) -> PathBuf {
        self.index.read().path_of(&self.dir, segment)
    }
}

/// The largest record a read that may not wait answers: checking and
/// copying it takes about 100 µs of CPU; larger ones go to a thread that
/// may block.
const MAX_READ_WITHOUT_WAITING: usize = 1 << 20;

/// Whether a read may wait for the disk or for the index lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    Yes,
    No,
    /// As `No`, for bytes in a span already found in memory (one check
    /// for the many records of a whole document).
    Resident,
}

/// The answer of a read that was allowed to wait.
pub(super) fn answered<T>(read: Result<Option<T>>) -> Result<T> {
    read.map(|found| found.expect("a read that may wait always answers"))
}

/// The answer of a read that was not allowed to wait, if it has one. Only
/// a missing id is reported from here; any other error is found again,
/// and reported, by the caller's retry that may wait.
pub(super) fn without_waiting<T>(read: Result<Option<T>>) -> Option<Result<T>> {
    match read {
        Ok(found) => found.map(Ok),
        Err(e @ Error::NotFound(_)) => Some(Err(e)),
        Err(_) => None,
    }
}
