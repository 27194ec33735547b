//! Corvid's binary protocol, versions 1 to 3: bytes to and from the core API types.
//!
//! This crate has no sockets. A transport reads the 8-byte handshake ([`ClientHello`],
//! [`ServerHello`]) and then a stream of [`Frame`]s, either with [`decode`] and [`encode`]
//! on its own buffer or with [`WireCodec`] under `tokio_util::codec::Framed`.
//! docs/protocol.md at the root of the repository is the byte-by-byte specification;
//! the tests pin its examples to this code.

mod codec;
mod error;
mod event;
mod frame;
pub mod fuzzing;
mod hello;
pub mod opcode;
mod primitive;
mod request;
mod response;

pub use codec::WireCodec;
pub use error::{CodecError, DecodeError, EncodeError, Malformed};
pub use frame::{
    decode, decode_version, encode, encode_version, Frame, DEFAULT_MAX_FRAME, LENGTH_PREFIX,
    MIN_FRAME_LEN,
};
pub use hello::{
    ClientHello, HelloError, HelloStatus, ServerHello, HELLO_LEN, MAGIC, MIN_VERSION, VERSION,
};
pub use request::OLDEST_UNREAD_VERSION;
pub use response::LEADER_ADDRESS_VERSION;
