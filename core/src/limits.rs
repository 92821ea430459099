//! Size limits, checked before anything is written.
//!
//! Everything the index keeps in RAM (column maps) is bounded per document,
//! and every record fits the format's 32-bit lengths with room to spare.

use crate::Columns;
use crate::record::MAX_PAYLOAD_LEN;
use crate::value::Value;

/// The sizes a request may not exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest document blob, in bytes.
    pub max_blob_bytes: usize,
    /// Largest encoded node value, in bytes.
    pub max_value_bytes: usize,
    /// Longest column name, in bytes.
    pub max_column_name_bytes: usize,
    /// Longest column value, in bytes.
    pub max_column_value_bytes: usize,
    /// Most columns per document.
    pub max_columns: usize,
    /// Largest batch, in bytes of its encoded records: a batch over it is
    /// refused whole, never written in part.
    pub max_batch_bytes: usize,
    /// Most operations in one batch.
    pub max_batch_ops: usize,
    /// Most inputs in a document's chain whose order is not id order (its
    /// chain record lists them all, 8 bytes each).
    pub max_chain_inputs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_bytes: 16 << 20,
            max_value_bytes: 16 << 20,
            max_column_name_bytes: 256,
            max_column_value_bytes: 64 << 10,
            max_columns: 256,
            max_batch_bytes: 256 << 20,
            max_batch_ops: 1 << 20,
            max_chain_inputs: 1 << 20,
        }
    }
}

/// A request that breaks a limit or is malformed. Nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A document blob over [`Limits::max_blob_bytes`].
    #[error("blob is {len} bytes, above the limit of {limit}")]
    BlobTooLarge {
        /// The blob's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A node value whose encoding is over [`Limits::max_value_bytes`].
    #[error("value is {len} bytes encoded, above the limit of {limit}")]
    ValueTooLarge {
        /// The value's encoded length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A column with an empty name.
    #[error("column name is empty")]
    EmptyColumnName,
    /// A column name over [`Limits::max_column_name_bytes`].
    #[error("column name is {len} bytes, above the limit of {limit}")]
    ColumnNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A column value over [`Limits::max_column_value_bytes`].
    #[error("value of column {name:?} is {len} bytes, above the limit of {limit}")]
    ColumnValueTooLong {
        /// The column's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// More columns than [`Limits::max_columns`].
    #[error("{count} columns, above the limit of {limit} per document")]
    TooManyColumns {
        /// The number of columns.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch whose records are over [`Limits::max_batch_bytes`].
    #[error("batch is over {limit} bytes encoded")]
    BatchTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A batch with more operations than [`Limits::max_batch_ops`].
    #[error("batch has {count} operations, above the limit of {limit}")]
    TooManyOps {
        /// The number of operations.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch with no operations.
    #[error("batch has no operations")]
    EmptyBatch,
    /// An operation names "what operation N created" for an N that is not
    /// an earlier operation of the batch creating that kind of thing.
    #[error("operation {op} refers to operation {to}, which is not an earlier operation creating a {what}")]
    BadReference {
        /// The operation that refers.
        op: usize,
        /// The operation it refers to.
        to: usize,
        /// "problem" or "test case".
        what: &'static str,
    },
    /// An expected version given for a write that names no existing
    /// document (a create).
    #[error("an expected version applies only to a write to an existing problem")]
    NothingToExpect,
    /// A test case placed before or after itself.
    #[error("test case {0} cannot be placed relative to itself")]
    PlacedBesideItself(u64),
    /// A reordered chain over [`Limits::max_chain_inputs`].
    #[error("a chain of {count} inputs cannot be reordered (the limit is {limit})")]
    ChainTooLong {
        /// The chain's length.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A limit so high that a record within it would not fit the format
    /// (from [`Limits::validate`]).
    #[error("limit {name} = {value} is above what the format can store ({max})")]
    LimitTooLarge {
        /// The limit's field name.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The bound it was checked against (for `max_columns`, the bytes
        /// a whole column map may take).
        max: usize,
    },
}

/// Headroom for column maps inside a record that also holds a blob.
const COLUMNS_HEADROOM: usize = 64 << 20;

impl Limits {
    /// Checks that records within these limits fit the format.
    pub fn validate(&self) -> Result<(), Invalid> {
        let max = MAX_PAYLOAD_LEN as usize - COLUMNS_HEADROOM;
        for (name, value) in [("max_blob_bytes", self.max_blob_bytes), ("max_value_bytes", self.max_value_bytes)] {
            if value > max {
                return Err(Invalid::LimitTooLarge { name, value, max });
            }
        }
        // An encoded column map: a 4-byte count, then per column two 4-byte
        // lengths, the name and the value.
        let per_column = self.max_column_name_bytes.saturating_add(self.max_column_value_bytes).saturating_add(8);
        let columns = self.max_columns.saturating_mul(per_column).saturating_add(4);
        if columns > COLUMNS_HEADROOM {
            return Err(Invalid::LimitTooLarge { name: "max_columns", value: self.max_columns, max: COLUMNS_HEADROOM });
        }
        let batch_max = MAX_PAYLOAD_LEN as usize;
        if self.max_batch_bytes > batch_max {
            return Err(Invalid::LimitTooLarge {
                name: "max_batch_bytes",
                value: self.max_batch_bytes,
                max: batch_max,
            });
        }
        // A chain record lists 8 bytes per input and must fit a payload.
        let chain_max = (MAX_PAYLOAD_LEN as usize - 4) / 8;
        if self.max_chain_inputs > chain_max {
            let value = self.max_chain_inputs;
            return Err(Invalid::LimitTooLarge { name: "max_chain_inputs", value, max: chain_max });
        }
        Ok(())
    }

    /// Checks a document blob's length.
    pub fn check_blob(&self, blob: &[u8]) -> Result<(), Invalid> {
        if blob.len() > self.max_blob_bytes {
            return Err(Invalid::BlobTooLarge { len: blob.len(), limit: self.max_blob_bytes });
        }
        Ok(())
    }

    /// Checks a node value's encoded length.
    pub fn check_value(&self, value: &Value) -> Result<(), Invalid> {
        let len = value.encoded_len();
        if len > self.max_value_bytes {
            return Err(Invalid::ValueTooLarge { len, limit: self.max_value_bytes });
        }
        Ok(())
    }

    /// Checks one column: a name that is not empty, and the lengths of name
    /// and value.
    pub fn check_column(&self, name: &str, value: &str) -> Result<(), Invalid> {
        if name.is_empty() {
            return Err(Invalid::EmptyColumnName);
        }
        if name.len() > self.max_column_name_bytes {
            return Err(Invalid::ColumnNameTooLong { len: name.len(), limit: self.max_column_name_bytes });
        }
        if value.len() > self.max_column_value_bytes {
            return Err(Invalid::ColumnValueTooLong {
                name: name.to_owned(),
                len: value.len(),
                limit: self.max_column_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks a whole column map: the number of columns, then each column
    /// as [`Limits::check_column`] does.
    pub fn check_columns(&self, columns: &Columns) -> Result<(), Invalid> {
        if columns.len() > self.max_columns {
            return Err(Invalid::TooManyColumns { count: columns.len(), limit: self.max_columns });
        }
        columns.iter().try_for_each(|(name, value)| self.check_column(name, value))
    }
}
