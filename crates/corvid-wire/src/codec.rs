//! [`WireCodec`]: the frame functions as a `tokio_util` codec, for `Framed` transports.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{CodecError, DecodeError, Malformed};
use crate::frame::{self, Frame, DEFAULT_MAX_FRAME};
use crate::VERSION;

/// Decodes and encodes [`Frame`]s on a byte stream, after the handshake.
///
/// A malformed frame is an *item*, `Some(Err(malformed))`, not a stream error: the frame
/// was consumed, so the connection can answer it and go on. `tokio_util`'s `FramedRead`
/// ends the stream after any decoder error, which is right only for the fatal ones
/// (a frame too large or too short), and those are the only decode errors this codec
/// returns as `Err`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireCodec {
    max_len: usize,
    version: u16,
}

impl WireCodec {
    /// A codec that refuses frames whose length prefix exceeds `max_len`, and decodes the
    /// newest protocol version.
    pub fn new(max_len: usize) -> WireCodec {
        WireCodec {
            max_len,
            version: VERSION,
        }
    }

    /// The same codec for a connection that agreed on protocol `version` in its hello: it
    /// decodes and encodes frames as that version has them.
    pub fn with_version(self, version: u16) -> WireCodec {
        WireCodec { version, ..self }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn version(&self) -> u16 {
        self.version
    }
}

impl Default for WireCodec {
    fn default() -> WireCodec {
        WireCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for WireCodec {
    type Item = Result<Frame, Malformed>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match frame::decode_version(src, self.max_len, self.version) {
            Ok(frame) => Ok(frame.map(Ok)),
            Err(DecodeError::Malformed(malformed)) => Ok(Some(Err(malformed))),
            Err(fatal) => Err(fatal.into()),
        }
    }
}

impl Encoder<&Frame> for WireCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame::encode_version(frame, dst, self.version).map_err(Into::into)
    }
}

impl Encoder<Frame> for WireCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame::encode_version(&frame, dst, self.version).map_err(Into::into)
    }
}
