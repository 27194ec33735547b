//! Corvid errors as gRPC statuses, and back.
//!
//! A status carries the nearest standard gRPC code, the error's sentence as its message,
//! and the stable Corvid error in metadata (trailers): [`CODE_KEY`] (the number),
//! [`NAME_KEY`] (the name) and [`DETAIL_KEY`] (the detail number), and on `not_leader`
//! the leader's gRPC address, when known, in [`LEADER_KEY`]. `proto/corvid.proto`
//! documents the same table for other clients.

use corvid_core::{ApiError, ErrorCode, LeaderAddrs};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Metadata key of the error code's number ("20").
pub const CODE_KEY: &str = "corvid-error-code";
/// Metadata key of the error code's name ("unknown_recipient").
pub const NAME_KEY: &str = "corvid-error-name";
/// Metadata key of the detail number ("3" unread messages), "0" when the code has none.
pub const DETAIL_KEY: &str = "corvid-error-detail";
/// Metadata key of the leader's gRPC address ("10.0.0.2:7071") on a `not_leader` status,
/// when the server knows the leader: the client's next attempt goes there.
pub const LEADER_KEY: &str = "corvid-leader";

/// The standard gRPC code nearest to a Corvid error code.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::Malformed
        | ErrorCode::InvalidUsername
        | ErrorCode::InvalidDisplayName
        | ErrorCode::InvalidPassword
        | ErrorCode::InvalidText
        | ErrorCode::InvalidPattern
        | ErrorCode::InvalidLimit
        | ErrorCode::InvalidCursor
        | ErrorCode::TooManyIds => Code::InvalidArgument,
        ErrorCode::InvalidCredentials | ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::UnknownRecipient | ErrorCode::UnknownUser => Code::NotFound,
        ErrorCode::UsernameTaken => Code::AlreadyExists,
        ErrorCode::UnreadMessages => Code::FailedPrecondition,
        ErrorCode::RateLimited
        | ErrorCode::FrameTooLarge
        | ErrorCode::TooManyConnections
        | ErrorCode::TooManyAttempts
        | ErrorCode::TooManySubscriptions
        | ErrorCode::StorageFull => Code::ResourceExhausted,
        ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Busy => Code::Unavailable,
        ErrorCode::UnsupportedVersion => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
    }
}

/// The one mapping of a Corvid error to its gRPC form.
pub fn to_status(error: &ApiError) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(CODE_KEY, MetadataValue::from(error.code.as_u16()));
    metadata.insert(NAME_KEY, MetadataValue::from_static(error.code.name()));
    metadata.insert(DETAIL_KEY, MetadataValue::from(error.detail));
    let leader = error.leader.as_ref().and_then(|l| l.grpc.as_deref());
    if let Some(address) = leader.filter(|_| error.code == ErrorCode::NotLeader) {
        // An address that is no valid header value (it comes from the cluster's own
        // configuration) is left out: the client then tries the servers it knows.
        if let Ok(value) = address.parse() {
            metadata.insert(LEADER_KEY, value);
        }
    }
    Status::with_metadata(grpc_code(error.code), error.message.clone(), metadata)
}

/// The Corvid error for a status that tonic made itself, before any Corvid code ran: a
/// message over the size limit (`OUT_OF_RANGE`) is `frame_too_large`, and a request
/// that could not be decoded (`INTERNAL`) is `malformed`. `None` for any other status.
/// The server passes the result to [`to_status`], so that these carry the same metadata
/// as every other error.
pub fn edge_error(status: &Status) -> Option<ApiError> {
    let code = match status.code() {
        Code::OutOfRange => ErrorCode::FrameTooLarge,
        Code::Internal => ErrorCode::Malformed,
        _ => return None,
    };
    Some(ApiError::new(code, status.message()))
}

/// The Corvid error a status carries, or `None` when the status did not come from
/// Corvid's service (no [`CODE_KEY`]): then it is a transport or proxy failure, to be
/// read by its gRPC code. An unknown code number reads as `internal`, as the protocol
/// says.
pub fn from_status(status: &Status) -> Option<ApiError> {
    let metadata = status.metadata();
    let number: u16 = metadata.get(CODE_KEY)?.to_str().ok()?.parse().ok()?;
    let code = ErrorCode::from_u16(number).unwrap_or(ErrorCode::Internal);
    let detail = metadata
        .get(DETAIL_KEY)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let leader = metadata
        .get(LEADER_KEY)
        .and_then(|value| value.to_str().ok())
        .filter(|address| code == ErrorCode::NotLeader && !address.is_empty())
        .map(|address| LeaderAddrs {
            wire: None,
            grpc: Some(address.to_string()),
        });
    Some(ApiError {
        code,
        detail,
        message: status.message().to_string(),
        leader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_core::Rejection;

    #[test]
    fn every_code_round_trips_with_its_detail_and_message() {
        for code in ErrorCode::ALL {
            let error = ApiError::from(Rejection { code, detail: 7 });
            let status = to_status(&error);
            assert_eq!(status.code(), grpc_code(code));
            assert_eq!(status.message(), error.message);
            assert_eq!(
                status.metadata().get(NAME_KEY).unwrap().to_str().unwrap(),
                code.name()
            );
            assert_eq!(from_status(&status), Some(error));
        }
    }

    #[test]
    fn not_leader_carries_the_leaders_grpc_address() {
        let error = ApiError::not_leader(Some(LeaderAddrs {
            wire: Some("10.0.0.2:7070".into()),
            grpc: Some("10.0.0.2:7071".into()),
        }));
        let status = to_status(&error);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.metadata().get(LEADER_KEY).unwrap().to_str().unwrap(),
            "10.0.0.2:7071"
        );
        let decoded = from_status(&status).unwrap();
        assert_eq!(decoded.code, ErrorCode::NotLeader);
        assert_eq!(
            decoded.leader.unwrap().grpc.as_deref(),
            Some("10.0.0.2:7071")
        );
        // With no leader known, no key.
        let status = to_status(&ApiError::not_leader(None));
        assert!(status.metadata().get(LEADER_KEY).is_none());
        assert_eq!(from_status(&status).unwrap().leader, None);
    }

    #[test]
    fn codes_map_to_the_documented_grpc_codes() {
        let cases = [
            (ErrorCode::InvalidCredentials, Code::Unauthenticated),
            (ErrorCode::Unauthenticated, Code::Unauthenticated),
            (ErrorCode::UnknownRecipient, Code::NotFound),
            (ErrorCode::UnknownUser, Code::NotFound),
            (ErrorCode::UsernameTaken, Code::AlreadyExists),
            (ErrorCode::InvalidPattern, Code::InvalidArgument),
            (ErrorCode::Malformed, Code::InvalidArgument),
            (ErrorCode::UnreadMessages, Code::FailedPrecondition),
            (ErrorCode::RateLimited, Code::ResourceExhausted),
            (ErrorCode::NotLeader, Code::Unavailable),
            (ErrorCode::Unavailable, Code::Unavailable),
            (ErrorCode::Internal, Code::Internal),
        ];
        for (code, grpc) in cases {
            assert_eq!(grpc_code(code), grpc, "{code}");
        }
    }

    #[test]
    fn a_status_without_corvid_metadata_is_not_a_corvid_error() {
        assert_eq!(
            from_status(&Status::unavailable("connection refused")),
            None
        );
        let mut metadata = MetadataMap::new();
        metadata.insert(CODE_KEY, MetadataValue::from_static("not a number"));
        let status = Status::with_metadata(Code::Internal, "x", metadata);
        assert_eq!(from_status(&status), None);
    }

    #[test]
    fn statuses_tonic_makes_at_the_edge_become_corvid_errors() {
        let too_large = Status::out_of_range("message length too large");
        let error = edge_error(&too_large).unwrap();
        assert_eq!(error.code, ErrorCode::FrameTooLarge);
        assert_eq!(error.message, "message length too large");
        let undecodable = Status::internal("failed to decode Protobuf message");
        assert_eq!(edge_error(&undecodable).unwrap().code, ErrorCode::Malformed);
        assert_eq!(edge_error(&Status::unavailable("gone")), None);
    }

    #[test]
    fn an_unknown_code_number_reads_as_internal() {
        let mut metadata = MetadataMap::new();
        metadata.insert(CODE_KEY, MetadataValue::from(999u16));
        let status = Status::with_metadata(Code::Aborted, "from the future", metadata);
        let error = from_status(&status).unwrap();
        assert_eq!(error.code, ErrorCode::Internal);
        assert_eq!(error.message, "from the future");
        assert_eq!(error.detail, 0);
    }
}
