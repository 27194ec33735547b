//! Frames: `u32 length | u8 opcode | u32 request_id | body`, and the functions that turn
//! them into bytes and back.
//!
//! Decoding follows mini-redis: first check that the whole frame has arrived (an
//! incomplete frame is `Ok(None)`, not an error, and consumes nothing), then parse the
//! complete frame from a slice, so a parser never has to resume half-way through a field.

use bytes::{BufMut, BytesMut};
use corvid_core::{ApiError, Event, Request, Response};

use crate::error::{DecodeError, EncodeError, Malformed};
use crate::primitive::{FieldError, ReadResult, Reader, Writer};
use crate::{event, opcode, request, response, VERSION};

/// The size of the length prefix that starts every frame.
pub const LENGTH_PREFIX: usize = 4;
/// The smallest valid value of the length prefix: an opcode and a request id.
pub const MIN_FRAME_LEN: usize = 1 + 4;
/// The largest frame (the value of its length prefix) a server accepts unless configured
/// otherwise: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// One unit of the protocol, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client to server. `id` is chosen by the client and echoed by the answer.
    Request { id: u32, request: Request },
    /// Server to client: the answer to request `id`.
    Response { id: u32, response: Response },
    /// Server to client: request `id` failed, or (with `id` 0) the connection has a problem.
    Error { id: u32, error: ApiError },
    /// Server to client, pushed to a subscribed connection. Carries request id 0.
    Event(Event),
}

impl Frame {
    /// The opcode this frame is written with.
    pub fn opcode(&self) -> u8 {
        match self {
            Frame::Request { request, .. } => request::opcode(request),
            Frame::Response { response, .. } => response::opcode(response),
            Frame::Error { .. } => opcode::ERROR,
            Frame::Event(event) => event::opcode(event),
        }
    }

    /// The request id written in the header: 0 for events.
    pub fn request_id(&self) -> u32 {
        match self {
            Frame::Request { id, .. } | Frame::Response { id, .. } | Frame::Error { id, .. } => *id,
            Frame::Event(_) => 0,
        }
    }

    /// For a server: the request this frame carries, or, when a client sent a frame that
    /// only a server may send (a response, an error, an event), the [`Malformed`] error to
    /// answer it with.
    pub fn into_request(self) -> Result<(u32, Request), Malformed> {
        let opcode = self.opcode();
        match self {
            Frame::Request { id, request } => Ok((id, request)),
            other => Err(Malformed {
                request_id: other.request_id(),
                opcode,
                reason: format!("opcode {opcode:#04x} is sent by servers, not clients"),
            }),
        }
    }
}

/// Appends `frame` to `dst`.
///
/// Fails only for a value that its length prefix cannot carry (a `str` over 65,535 bytes, a
/// list of more than 65,535 items, a frame over 4 GiB); `dst` is then left unchanged.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
    encode_version(frame, dst, VERSION)
}

/// [`encode`] for a connection that speaks protocol `version`: what a later version added
/// to a frame (the leader's address of a `not_leader` error) is left out.
pub fn encode_version(frame: &Frame, dst: &mut BytesMut, version: u16) -> Result<(), EncodeError> {
    let start = dst.len();
    let result = write_frame(frame, dst, start, version);
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

fn write_frame(
    frame: &Frame,
    dst: &mut BytesMut,
    start: usize,
    version: u16,
) -> Result<(), EncodeError> {
    // The length is patched in once the body is written and its size known.
    dst.put_u32(0);
    let mut w = Writer::new(dst);
    w.u8(frame.opcode());
    w.u32(frame.request_id());
    match frame {
        Frame::Request { request, .. } => request::write(&mut w, request)?,
        Frame::Response { response, .. } => response::write(&mut w, response)?,
        Frame::Error { error, .. } => response::write_error(&mut w, error, version)?,
        Frame::Event(event) => event::write(&mut w, event)?,
    }
    let len = dst.len() - start - LENGTH_PREFIX;
    let prefix = u32::try_from(len).map_err(|_| EncodeError::TooLong {
        field: "frame",
        len,
        max: u32::MAX as usize,
    })?;
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Takes the next frame off the front of `src`.
///
/// - `Ok(None)`: not all of the frame has arrived yet; nothing was consumed. Room for the
///   rest of the frame is reserved once its length is known to be acceptable.
/// - `Ok(Some(frame))`: the frame was consumed.
/// - `Err(DecodeError::Malformed(_))`: the frame was consumed but is invalid; the next
///   frame can be decoded.
/// - `Err` of another kind ([`DecodeError::is_fatal`]): the length prefix is out of bounds.
///   Nothing was consumed and the stream cannot be framed any further.
///
/// `max_len` bounds the length prefix (the bytes after it), and is checked as soon as the
/// prefix has arrived, before any buffer grows. Decodes the newest protocol version,
/// [`VERSION`]; see [`decode_version`].
pub fn decode(src: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, DecodeError> {
    decode_version(src, max_len, VERSION)
}

/// [`decode`] for a connection that speaks protocol `version`: a request that uses what
/// a later version added is malformed, and an error frame is read as that version wrote it.
pub fn decode_version(
    src: &mut BytesMut,
    max_len: usize,
    version: u16,
) -> Result<Option<Frame>, DecodeError> {
    let Some(prefix) = src.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    // A length that does not fit in usize is certainly over any limit.
    let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    if len < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooShort { len });
    }
    if len > max_len {
        return Err(DecodeError::FrameTooLarge { len, max: max_len });
    }
    let total = len.saturating_add(LENGTH_PREFIX);
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    let bytes = src.split_to(total);
    let Some((&[code, a, b, c, d], body)) = bytes[LENGTH_PREFIX..].split_first_chunk::<5>() else {
        // Unreachable: the length was checked to be at least MIN_FRAME_LEN.
        return Err(DecodeError::FrameTooShort { len });
    };
    let request_id = u32::from_be_bytes([a, b, c, d]);
    read_frame(code, request_id, body, version)
        .map(Some)
        .map_err(|err| {
            DecodeError::Malformed(Malformed {
                request_id,
                opcode: code,
                reason: err.to_string(),
            })
        })
}

fn read_frame(code: u8, request_id: u32, body: &[u8], version: u16) -> ReadResult<Frame> {
    let mut r = Reader::new(body);
    let frame = match code {
        code if opcode::REQUESTS.contains(&code) => {
            // Request id 0 would make the answer look like a frame about the connection.
            if request_id == 0 {
                return Err(FieldError::ReservedRequestId);
            }
            let request = request::read(code, &mut r)?;
            request::check_version(&request, version)?;
            Frame::Request {
                id: request_id,
                request,
            }
        }
        code if opcode::RESPONSES.contains(&code) => {
            if request_id == 0 {
                return Err(FieldError::ReservedRequestId);
            }
            Frame::Response {
                id: request_id,
                response: response::read(code, &mut r)?,
            }
        }
        code if opcode::EVENTS.contains(&code) => {
            let event = event::read(code, &mut r)?;
            if request_id != 0 {
                return Err(FieldError::EventWithRequestId(request_id));
            }
            Frame::Event(event)
        }
        opcode::ERROR => Frame::Error {
            id: request_id,
            error: response::read_error(&mut r, version)?,
        },
        unknown => return Err(FieldError::UnknownOpcode(unknown)),
    };
    r.finish()?;
    Ok(frame)
}
