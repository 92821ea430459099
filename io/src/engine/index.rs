//! The index: the key directory and the table of segment files it points
//! into.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stratum_core::{Defect, KeyDir, Location, SegmentId};

use crate::error::{Error, Result};
use crate::segment::SegmentFile;
use stratum_core::{ACTIVE_NAME, MERGED_NAME};

/// The key directory and the open segment files, behind one lock (lock 3
/// of the engine's lock order): a location and the file it is in are always
/// looked up together.
#[derive(Debug)]
pub(super) struct Index {
    pub(super) keydir: KeyDir,
    pub(super) files: HashMap<SegmentId, Arc<SegmentFile>>,
    /// The segment behind `active.seg`.
    pub(super) active: SegmentId,
    /// The segment behind `merged.seg`, if a compaction wrote one.
    pub(super) merged: Option<SegmentId>,
    /// The first segment `merged.seg` replaced (from its checkpoint).
    pub(super) merged_covers_from: Option<SegmentId>,
    /// Sealed segments whose hint file is written.
    pub(super) hinted: HashSet<SegmentId>,
}

impl Index {
    pub(super) fn path_of(&self, dir: &Path, segment: SegmentId) -> PathBuf {
        if segment == self.active {
            dir.join(ACTIVE_NAME)
        } else if Some(segment) == self.merged {
            dir.join(MERGED_NAME)
        } else {
            dir.join(stratum_core::sealed_name(segment))
        }
    }

    pub(super) fn file(&self, location: Location) -> Result<Arc<SegmentFile>> {
        self.files.get(&location.segment()).cloned().ok_or_else(|| Error::Corrupt {
            file: PathBuf::from(stratum_core::sealed_name(location.segment())),
            offset: location.offset(),
            defect: Defect::SegmentNotOpen,
        })
    }
}
