//! Translation between the wire and the engine: protobuf values to engine
//! values and back, and engine errors to gRPC statuses (the one place where
//! that mapping is decided).

use stratum_io::{Error, Id, Invalid, Missing, Value};
use tonic::Status;

use crate::proto;

/// The status a client gets for an engine error. Messages that name a
/// tier use the wire's words (problem, test case, expected output, html)
/// rather than the engine's (document, input, output, blob).
pub fn status(error: Error) -> Status {
    if let Error::InBatch { op, source } = error {
        let inner = status(*source);
        let mut status = Status::new(inner.code(), format!("operation {op} of the batch: {}", inner.message()));
        *status.metadata_mut() = inner.metadata().clone();
        return status;
    }
    let message = match &error {
        Error::NotFound(missing) => missing_message(missing),
        Error::Invalid(Invalid::BlobTooLarge { len, limit }) => {
            format!("html is {len} bytes, above the limit of {limit}")
        }
        Error::Invalid(Invalid::TooManyColumns { count, limit }) => {
            format!("{count} columns, above the limit of {limit} per problem")
        }
        other => other.to_string(),
    };
    match error {
        Error::VersionMismatch { document, current, .. } => {
            let mut status = Status::aborted(message.replace("document", "problem"));
            let metadata = status.metadata_mut();
            metadata.insert("lse-current-version", current.into());
            metadata.insert("lse-problem-id", document.into());
            status
        }
        Error::NotFound(_) => Status::not_found(message),
        Error::Invalid(_) => Status::invalid_argument(message),
        Error::Corrupt { .. } => Status::data_loss(message),
        Error::Poisoned { .. } => Status::unavailable(message),
        Error::OutcomeUnknown { .. } => Status::unknown(message),
        Error::Locked { .. } | Error::Options(_) => Status::failed_precondition(message),
        Error::SegmentIdsExhausted | Error::MergedTooLarge => Status::resource_exhausted(message),
        Error::Io { .. } => Status::internal(message),
        Error::InBatch { .. } => unreachable!("taken apart above"),
    }
}

/// Why an engine call failed: an engine error, or a status the call
/// decided itself (a stale version on a read, html that is not UTF-8).
#[derive(Debug)]
pub enum Failed {
    Engine(Error),
    Status(Status),
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed::Engine(error)
    }
}

impl From<Status> for Failed {
    fn from(status: Status) -> Failed {
        Failed::Status(status)
    }
}

impl Failed {
    pub fn into_status(self) -> Status {
        match self {
            Failed::Engine(error) => status(error),
            Failed::Status(status) => status,
        }
    }
}

/// The status for an engine call whose blocking task failed (it panicked
/// or the runtime is shutting down): the server's fault, not the request's.
pub fn task_failed(error: tokio::task::JoinError) -> Status {
    Status::internal(format!("engine call failed: {error}"))
}

fn missing_message(missing: &Missing) -> String {
    match *missing {
        Missing::Document(problem) => format!("problem {problem} not found"),
        Missing::Input { document, input } => format!("test case {input} not found in problem {document}"),
        Missing::Output { document, input } => {
            format!("test case {input} of problem {document} has no expected output")
        }
    }
}

/// Checks that a request field holds an id (ids start at 1).
pub fn id(field: &str, id: u64) -> Result<Id, Status> {
    if id == 0 {
        return Err(Status::invalid_argument(format!("{field} is required (ids start at 1)")));
    }
    Ok(id)
}

/// The engine value of a request's value field.
pub fn value_from_wire(value: Option<proto::Value>) -> Result<Value, Status> {
    use proto::value::Kind;
    let kind = value.and_then(|v| v.kind).ok_or_else(|| {
        Status::invalid_argument(
            "value is required: set exactly one of int_value, double_value, string_value, int_list, string_list, \
             string_map, bytes_value",
        )
    })?;
    Ok(match kind {
        Kind::IntValue(v) => Value::Int(v),
        Kind::DoubleValue(v) => Value::Double(v),
        Kind::StringValue(v) => Value::Str(v),
        Kind::IntList(list) => Value::IntList(list.values),
        Kind::StringList(list) => Value::StrList(list.values),
        Kind::StringMap(map) => Value::Map(map.entries),
        Kind::BytesValue(bytes) => Value::Bytes(bytes),
    })
}

/// The wire form of an engine value.
pub fn value_to_wire(value: Value) -> proto::Value {
    use proto::value::Kind;
    let kind = match value {
        Value::Int(v) => Kind::IntValue(v),
        Value::Double(v) => Kind::DoubleValue(v),
        Value::Str(v) => Kind::StringValue(v),
        Value::IntList(values) => Kind::IntList(proto::IntList { values }),
        Value::StrList(values) => Kind::StringList(proto::StringList { values }),
        Value::Map(entries) => Kind::StringMap(proto::StringMap { entries }),
        Value::Bytes(bytes) => Kind::BytesValue(bytes),
    };
    proto::Value { kind: Some(kind) }
}

/// A blob as the wire's `string html`. Blobs are only ever written from
/// strings, so invalid UTF-8 means damage.
pub fn html(problem: Id, blob: Vec<u8>) -> Result<String, Status> {
    String::from_utf8(blob).map_err(|_| Status::data_loss(format!("the html of problem {problem} is not valid UTF-8")))
}

/// Page tokens are the last id of the previous page, in decimal.
pub fn page_token(token: &str) -> Result<Id, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| Status::invalid_argument(format!("page_token {token:?} was not issued by this server")))
}
