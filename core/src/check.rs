//! Checks on a record read back from the location the index gave for it:
//! a whole record, a valid checksum, about the id asked for, of a kind the
//! index points at there. The read path and compaction both use these, so
//! a damaged record is refused the same way wherever it is met.

use crate::defect::Defect;
use crate::record::{Body, RecordRef, Salt, decode_record};
use crate::{Id, Value};

/// The record spanning all of `bytes`, checksum verified for the `salt`
/// of the segment it was read from, which must be about `id`.
pub fn checked_record<'a>(bytes: &'a [u8], salt: &Salt, id: Id) -> Result<RecordRef<'a>, Defect> {
    let record = decode_record(bytes, salt)?;
    if record.id != id {
        return Err(Defect::WrongId { found: record.id, expected: id });
    }
    Ok(record)
}

/// The blob of the document record in `bytes` (a create or a blob
/// update), which must be about document `id`.
pub fn record_blob<'a>(bytes: &'a [u8], salt: &Salt, id: Id) -> Result<&'a [u8], Defect> {
    let record = checked_record(bytes, salt, id)?;
    match record.blob()? {
        Some(blob) => Ok(blob),
        None => Err(Defect::UnexpectedKind(record.kind)),
    }
}

/// The value of the input or output record in `bytes`, which must be about
/// input `id`.
pub fn record_value(bytes: &[u8], salt: &Salt, id: Id) -> Result<Value, Defect> {
    match checked_record(bytes, salt, id)?.body()? {
        Body::PutInput { value, .. } | Body::PutOutput { value, .. } => Value::decode(value).map_err(Defect::Value),
        other => Err(Defect::UnexpectedKind(other.kind())),
    }
}
