//! Recovery: replaying a segment's bytes into a [`crate::KeyDir`] (or any
//! other [`RecordSink`]).
//!
//! The replay is fed bytes as the caller reads them and applies each valid
//! record in order. It remembers where the last valid record ended, so when
//! the bytes stop making sense the caller knows exactly where the good part
//! of the segment ends. Whether a bad tail is cut off or is an error depends
//! on the segment: the active segment may end in a torn write (a crash in
//! the middle of an append), a sealed segment was synced whole before it was
//! sealed, so damage there is corruption.

use crate::keydir::{Applied, RecordMeta, RecordSink};
use crate::record::{
    Body, Corruption, Effect, RECORD_HEADER_LEN, RecordRef, SEGMENT_HEADER_LEN, Salt, Scan, batch_entries, scan,
};
use crate::{Location, SegmentId};

/// What one checked record at `location` (in a segment salted with
/// `salt`) does to the index, record by record: the record itself or, for
/// a batch frame, the frame's header (an [`Effect::Batch`] as long as a
/// record header, which is garbage) and then each record inside it at its
/// own location. Every record of a frame is checked before any is given
/// out, so a batch is applied whole or not at all. Recovery and the live
/// write path both apply records through here.
pub fn expand_record<'a>(
    record: &RecordRef<'a>,
    body: Body<'a>,
    location: Location,
    salt: &Salt,
) -> Result<Expanded<'a>, Corruption> {
    let Body::Batch { records } = body else {
        return Ok(Expanded::One(Some((RecordMeta { seq: record.seq, id: record.id, location }, body.into_effect()))));
    };
    let header = Location::new(location.segment(), location.offset(), RECORD_HEADER_LEN as u32)
        .expect("the frame's own location is valid");
    let mut all = vec![(RecordMeta { seq: record.seq, id: 0, location: header }, Effect::Batch)];
    for entry in batch_entries(records, salt) {
        let (at, inner, body) = entry?;
        let offset = location.offset() + (RECORD_HEADER_LEN + at) as u64;
        let at = Location::new(location.segment(), offset, inner.len() as u32).ok_or(Corruption::BeyondMaxOffset)?;
        all.push((RecordMeta { seq: inner.seq, id: inner.id, location: at }, body.into_effect()));
    }
    Ok(Expanded::Many(all.into_iter()))
}

/// The records [`expand_record`] found, in the order they apply.
#[derive(Debug)]
pub enum Expanded<'a> {
    /// A record on its own.
    One(Option<(RecordMeta, Effect<'a>)>),
    /// A batch frame's header, then its records.
    Many(std::vec::IntoIter<(RecordMeta, Effect<'a>)>),
}

impl<'a> Iterator for Expanded<'a> {
    type Item = (RecordMeta, Effect<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Expanded::One(one) => one.take(),
            Expanded::Many(many) => many.next(),
        }
    }
}

/// What may be done with a bad tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailPolicy {
    /// Cut the segment at the last valid record (the active segment).
    Truncate,
    /// Refuse: the segment was sealed whole (sealed and merged segments).
    Reject,
}

/// The result of feeding bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Feed {
    /// `consumed` bytes held whole records, now applied. The rest of the
    /// buffer is the start of a record that needs `needed` bytes in all.
    NeedMore {
        /// Bytes applied, from the start of the buffer.
        consumed: usize,
        /// Bytes from `consumed` on that the next record needs.
        needed: usize,
    },
    /// `consumed` bytes were applied, then the bytes stopped being records.
    Stopped {
        /// Bytes applied, from the start of the buffer: where the bad bytes
        /// start.
        consumed: usize,
        /// What is wrong with them.
        corruption: Corruption,
    },
}

/// How a segment's replay ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// Every byte belonged to a valid record.
    Clean {
        /// The segment file's length.
        len: u64,
    },
    /// The segment must be cut to `valid_len` bytes; `dropped` bytes after
    /// it were not records.
    TornTail {
        /// The length of the valid prefix, segment header included.
        valid_len: u64,
        /// Bytes after the valid prefix.
        dropped: u64,
        /// What is wrong at the end of the valid prefix.
        reason: Corruption,
    },
}

/// Damage that may not be cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record at offset {offset}: {reason}")]
pub struct CorruptSegment {
    /// The file offset of the bad record: the end of the valid prefix.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: Corruption,
}

/// Replays one segment, record by record.
#[derive(Debug)]
pub struct SegmentReplay {
    segment: SegmentId,
    salt: Salt,
    /// File offset of the next record: the end of the valid prefix.
    valid_len: u64,
    records: u64,
    ignored: u64,
    /// The furthest offset a valid durability mark said was synced.
    durable_upto: u64,
}

impl SegmentReplay {
    /// Starts replaying `segment`, salted with `salt` (from its header),
    /// at the first record after its header.
    pub fn new(segment: SegmentId, salt: Salt) -> Self {
        SegmentReplay { segment, salt, valid_len: SEGMENT_HEADER_LEN as u64, records: 0, ignored: 0, durable_upto: 0 }
    }

    /// The file offset just past the last valid record so far.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    /// The furthest offset a durability mark replayed so far says was
    /// synced (0 if none): bytes past it may be in no fsync's reach yet.
    pub fn durable_upto(&self) -> u64 {
        self.durable_upto
    }

    /// Records applied so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records that referred to things that no longer existed.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Applies the whole records at the start of `buf`, which must begin at
    /// [`SegmentReplay::valid_len`].
    pub fn feed(&mut self, sink: &mut impl RecordSink, buf: &[u8]) -> Feed {
        let mut consumed = 0;
        loop {
            let record = match scan(&buf[consumed..], &self.salt) {
                Scan::Record(record) => record,
                Scan::Incomplete { needed } => return Feed::NeedMore { consumed, needed },
                Scan::Invalid(corruption) => return Feed::Stopped { consumed, corruption },
            };
            let body = match record.body() {
                Ok(body) => body,
                Err(e) => return Feed::Stopped { consumed, corruption: Corruption::Payload(e) },
            };
            let len = record.len();
            let Some(location) = Location::new(self.segment, self.valid_len, len as u32) else {
                return Feed::Stopped { consumed, corruption: Corruption::BeyondMaxOffset };
            };
            if let Body::Durable { salt, upto } = body
                && salt == *self.salt.bytes()
            {
                self.durable_upto = self.durable_upto.max(upto);
            }
            let expanded = match expand_record(&record, body, location, &self.salt) {
                Ok(expanded) => expanded,
                Err(corruption) => return Feed::Stopped { consumed, corruption },
            };
            for (meta, effect) in expanded {
                self.records += 1;
                if sink.record(meta, effect) == Applied::Ignored {
                    self.ignored += 1;
                }
            }
            self.valid_len += len as u64;
            consumed += len;
        }
    }

    /// Ends the replay. `file_len` is the segment's length; `stop` is what
    /// the last [`SegmentReplay::feed`] said, if it stopped on bad bytes.
    pub fn finish(
        self,
        file_len: u64,
        stop: Option<Corruption>,
        policy: TailPolicy,
    ) -> Result<Replayed, CorruptSegment> {
        if file_len == self.valid_len && stop.is_none() {
            return Ok(Replayed::Clean { len: file_len });
        }
        let dropped = file_len.saturating_sub(self.valid_len);
        let reason = stop.unwrap_or(Corruption::Truncated { missing: 0 });
        match policy {
            TailPolicy::Truncate => Ok(Replayed::TornTail { valid_len: self.valid_len, dropped, reason }),
            TailPolicy::Reject => Err(CorruptSegment { offset: self.valid_len, reason }),
        }
    }
}
