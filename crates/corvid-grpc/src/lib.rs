//! Corvid's gRPC API: the types and service stubs generated from `proto/corvid.proto`
//! ([`pb`]), their conversions to and from the protocol-neutral core API ([`convert`]),
//! and the mapping of errors to gRPC statuses ([`status`]).
//!
//! Only this crate knows the protobuf format. Protobuf types live at the edge: the server
//! turns them into `corvid_core` requests at once, and they never reach the Raft log or
//! the disk.

pub mod convert;
pub mod status;

/// The types and service stubs generated from `proto/corvid.proto` (package `corvid.v1`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("corvid.v1");
}

/// The encoded `FileDescriptorSet` of `proto/corvid.proto`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/corvid_descriptor.bin"));

/// The gRPC service's full name, as reflection lists it.
pub const SERVICE_NAME: &str = "corvid.v1.Chat";

/// The default port of the gRPC listener.
pub const DEFAULT_PORT: u16 = 7071;
