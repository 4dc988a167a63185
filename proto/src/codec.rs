//! The protobuf codec of every Cairn service: prost's, with small starting
//! buffers.
//!
//! Each open stream holds an encode and a decode buffer for its whole life.
//! At tonic's default of 8 KiB each, the buffers of a master's agent
//! sessions were most of its memory per agent (16 of 18 KiB at 10,000
//! agents); messages on these streams are mostly well under 1 KiB, and a
//! buffer grows when a larger one comes.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Starting size of a stream's encode and decode buffers.
pub const BUFFER_BYTES: usize = 1024;
/// Encoded messages gathered before they are handed to the transport
/// (tonic's default).
pub const YIELD_BYTES: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_BYTES)
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
