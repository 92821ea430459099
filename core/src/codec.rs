//! Bounds-checked little-endian primitives shared by every encoder.
//!
//! The decoder trusts nothing: every length is checked against the bytes
//! that are really there before anything is allocated, so arbitrary input
//! gives an error, never a panic or a huge allocation.

/// Why a byte string is not a valid encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ends inside a field, or a count promises more items than
    /// the bytes left could hold.
    #[error("unexpected end of data")]
    Truncated,
    /// Data that must span a whole buffer (a value, a payload, a record
    /// read at its location) ends this many bytes before the buffer does.
    #[error("{0} trailing bytes after the end of the data")]
    TrailingBytes(usize),
    /// A value's tag byte is none of the seven value types.
    #[error("unknown value tag {0}")]
    UnknownValueTag(u8),
    /// A hint entry's kind byte is no [`crate::RecordKind`].
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A string's bytes are not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A column map or map value whose keys are not strictly increasing:
    /// the encoder never writes one, so it is corruption.
    #[error("map keys are not in strictly increasing order")]
    UnorderedMap,
    /// A batch frame holds a record of a kind that may not be inside one
    /// (a frame, a mark, a checkpoint, a reservation).
    #[error("a record of kind {0} inside a batch")]
    NotInBatch(u8),
    /// A checkpoint names segment 0 or one above [`crate::MAX_SEGMENT_ID`].
    #[error("segment id is 0 or above the largest segment id")]
    ZeroSegmentId,
}

pub(crate) fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("lengths are limited far below 4 GiB before encoding");
    out.extend_from_slice(&len.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// A cursor over a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads an element count, rejecting counts that could not fit in the
    /// remaining bytes given each element takes at least `min_item_len`.
    pub(crate) fn count(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_len) > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// A length-prefixed UTF-8 string, borrowed.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// The bytes not read yet, without consuming them.
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}
