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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_bytes: 16 << 20,
            max_value_bytes: 16 << 20,
            max_column_name_bytes: 256,
            max_column_value_bytes: 64 << 10,
            max_columns: 256,
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
