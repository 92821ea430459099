//! The gRPC codec of every Stratum service: prost's, except that a request
//! whose bytes do not decode is `INVALID_ARGUMENT` (the caller sent them)
//! rather than prost's `INTERNAL` (which says the server is at fault).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Prost's encoding, with [`StrictDecoder`] for incoming messages. Named
/// in `build.rs` as the generated code's codec.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

/// Decodes a protobuf message; bytes that are not one are the sender's
/// error.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or("message");
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("the message is not a valid {name}: {e}")))
    }
}
