//! Checks on a record read back from the location the index gave for it:
//! a whole record, a valid checksum, about the id asked for, of a kind the
//! index points at there. The read path and compaction both use these, so
//! a damaged record is refused the same way wherever it is met.

use crate::defect::Defect;
use crate::record::{Body, RecordRef, decode_record};
use crate::{Id, Value};

/// The record spanning all of `bytes`, checksum verified, which must be
/// about `id`.
pub fn checked_record(bytes: &[u8], id: Id) -> Result<RecordRef<'_>, Defect> {
    let record = decode_record(bytes)?;
    if record.id != id {
        return Err(Defect::WrongId { found: record.id, expected: id });
    }
    Ok(record)
}

/// The blob of the document record in `bytes` (a create or a blob
/// update), which must be about document `id`.
pub fn record_blob(bytes: &[u8], id: Id) -> Result<&[u8], Defect> {
    let record = checked_record(bytes, id)?;
    match record.blob()? {
        Some(blob) => Ok(blob),
        None => Err(Defect::UnexpectedKind(record.kind)),
    }
}

/// The value of the input or output record in `bytes`, which must be about
/// input `id`.
pub fn record_value(bytes: &[u8], id: Id) -> Result<Value, Defect> {
    match checked_record(bytes, id)?.body()? {
        Body::PutInput { value, .. } | Body::PutOutput { value, .. } => Value::decode(value).map_err(Defect::Value),
        other => Err(Defect::UnexpectedKind(other.kind())),
    }
}
