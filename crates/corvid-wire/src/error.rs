//! What can go wrong turning bytes into frames and frames into bytes.

use corvid_core::{ApiError, ErrorCode};

use crate::frame::Frame;

/// A frame that was consumed whole but whose content is invalid: an unknown opcode, bad
/// UTF-8, a bool that is neither 0 nor 1, a truncated field, trailing bytes, a count larger
/// than the bytes that follow it.
///
/// The framing is intact, so the connection can go on: a server answers with an
/// [`ErrorCode::Malformed`] error that echoes `request_id`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame (opcode {opcode:#04x}, request {request_id}): {reason}")]
pub struct Malformed {
    pub request_id: u32,
    pub opcode: u8,
    pub reason: String,
}

/// Why [`decode`](crate::decode) could not produce a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is larger than the decoder accepts. Framing is lost: the
    /// connection must be closed after an error frame. Nothing was consumed or allocated.
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// The length prefix is smaller than an opcode and a request id (5 bytes). Framing is
    /// lost: the connection must be closed after an error frame. Nothing was consumed.
    #[error("frame of {len} bytes is shorter than the 5-byte minimum")]
    FrameTooShort { len: usize },
    /// The frame was consumed but its content is invalid; the next frame can be decoded.
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl DecodeError {
    /// The error code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::FrameTooShort { .. } | DecodeError::Malformed(_) => ErrorCode::Malformed,
        }
    }

    /// Whether the stream can no longer be split into frames, so the connection must close.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, DecodeError::Malformed(_))
    }

    /// The request this error is about, or 0 when it is about the connection.
    pub fn request_id(&self) -> u32 {
        match self {
            DecodeError::Malformed(malformed) => malformed.request_id,
            DecodeError::FrameTooLarge { .. } | DecodeError::FrameTooShort { .. } => 0,
        }
    }

    /// The error frame a server sends in answer; after a fatal error it then closes.
    pub fn error_frame(&self) -> Frame {
        Frame::Error {
            id: self.request_id(),
            error: ApiError::new(self.code(), self.to_string()),
        }
    }
}

/// A value that the wire format cannot carry, such as a `str` longer than 65,535 bytes.
/// The output buffer is left as it was before the call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("`{field}` has length {len}; the wire format allows at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

/// The error of [`WireCodec`](crate::WireCodec): a fatal decode error, an unencodable frame,
/// or a failure of the underlying transport.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
