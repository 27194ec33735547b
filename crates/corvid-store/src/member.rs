//! The member record: what a cluster's membership says about each of its servers. It is
//! openraft's node type, so it is written into log entries, the state meta and snapshots.
//!
//! # On-disk layout, and the record it replaces
//!
//! Data directories made before this record existed hold openraft's `BasicNode { addr }`,
//! encoded with postcard as one string: a varint length, then the address's UTF-8 bytes.
//! postcard is not self-describing, so a record with more fields cannot simply be derived:
//! reading the old bytes as the new struct would fail, or read the next map key as a field.
//! Instead, in binary formats (postcard) a member is encoded as a *byte string* — the same
//! varint length and bytes as that address string — whose contents tell the layout:
//!
//! ```text
//! 0xFF, layout u8 = 1, postcard (raft_addr: String, client: ClientAddrs)   this layout
//! UTF-8 bytes of an address (never begins with 0xFF)                       BasicNode's
//! ```
//!
//! So old and new records decode anywhere they appear (a membership entry of the log, the
//! state meta, a snapshot file) with no version to pass around. An old record becomes a
//! member whose `raft_addr` is the old address and whose client addresses are unknown. A
//! later record adds fields under a new layout byte; a layout this server does not know is
//! an error, never a guess. Human-readable formats (JSON, in tools) see a plain struct.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

/// The first byte of a member record in a layout of this module; no UTF-8 string begins
/// with it, so it cannot be the first byte of an old address.
const MARKER: u8 = 0xFF;
/// The layout written today: `raft_addr`, then `client`.
const LAYOUT: u8 = 1;

/// One server of the cluster, as the membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Where the other servers reach this one: its server-to-server (Raft) listener. Empty
    /// for a single server, which has no peers and so no such listener.
    pub raft_addr: String,
    /// Where clients reach this server, per protocol; a client told that another server
    /// leads goes to that server's address for its own protocol.
    pub client: ClientAddrs,
}

/// A server's client-facing addresses, one per protocol; `None` when it does not serve
/// that protocol (or the record predates them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAddrs {
    /// The binary protocol's listener (docs/protocol.md).
    pub wire: Option<String>,
    /// The gRPC listener.
    pub grpc: Option<String>,
    /// The web listener (the page and its JSON/WebSocket API).
    pub http: Option<String>,
}

/// The member record as a human-readable format shows it.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Member")]
struct Readable {
    raft_addr: String,
    client: ClientAddrs,
}

impl Member {
    /// The record's bytes in the binary layout (what postcard wraps as a byte string).
    fn to_layout(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut bytes = vec![MARKER, LAYOUT];
        bytes.extend(postcard::to_allocvec(&(&self.raft_addr, &self.client))?);
        Ok(bytes)
    }

    /// Reads either binary layout: this module's, or `BasicNode`'s address.
    fn from_layout(bytes: &[u8]) -> Result<Member, String> {
        match bytes {
            [MARKER, LAYOUT, fields @ ..] => {
                let ((raft_addr, client), rest) =
                    postcard::take_from_bytes::<(String, ClientAddrs)>(fields)
                        .map_err(|e| format!("member record: {e}"))?;
                if !rest.is_empty() {
                    return Err(format!(
                        "member record: {} bytes after its fields",
                        rest.len()
                    ));
                }
                Ok(Member { raft_addr, client })
            }
            [MARKER, layout, ..] => Err(format!(
                "member record layout {layout} is newer than this server knows ({LAYOUT})"
            )),
            [MARKER] => Err("member record: no layout byte".to_string()),
            old => {
                let addr = std::str::from_utf8(old)
                    .map_err(|e| format!("member record (an address): {e}"))?;
                Ok(Member {
                    raft_addr: addr.to_string(),
                    client: ClientAddrs::default(),
                })
            }
        }
    }
}

impl Serialize for Member {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return Readable {
                raft_addr: self.raft_addr.clone(),
                client: self.client.clone(),
            }
            .serialize(serializer);
        }
        let bytes = self.to_layout().map_err(ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        if deserializer.is_human_readable() {
            let Readable { raft_addr, client } = Readable::deserialize(deserializer)?;
            return Ok(Member { raft_addr, client });
        }
        deserializer.deserialize_bytes(LayoutVisitor)
    }
}

struct LayoutVisitor;

impl Visitor<'_> for LayoutVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member record (bytes) or an address (string)")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Member, E> {
        Member::from_layout(bytes).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, addr: &str) -> Result<Member, E> {
        Member::from_layout(addr.as_bytes()).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Member {
        Member {
            raft_addr: "10.0.0.1:7080".into(),
            client: ClientAddrs {
                wire: Some("10.0.0.1:7070".into()),
                grpc: Some("10.0.0.1:7071".into()),
                http: None,
            },
        }
    }

    /// What openraft's `BasicNode` wrote: a data directory made before the member record
    /// holds these bytes, in membership entries, the state meta and snapshot files.
    #[derive(Serialize)]
    struct BasicNode {
        addr: String,
    }

    #[test]
    fn a_member_round_trips_through_postcard_and_json() {
        for member in [full(), Member::default()] {
            let bytes = postcard::to_allocvec(&member).unwrap();
            assert_eq!(bytes[1], MARKER, "{bytes:?}");
            assert_eq!(postcard::from_bytes::<Member>(&bytes).unwrap(), member);
            let json = serde_json::to_string(&member).unwrap();
            assert!(json.contains("raft_addr"), "{json}");
            assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), member);
        }
    }

    #[test]
    fn an_old_basic_node_reads_as_a_member_with_its_address() {
        for addr in ["127.0.0.1:7070", ""] {
            let old = postcard::to_allocvec(&BasicNode { addr: addr.into() }).unwrap();
            assert_eq!(
                postcard::from_bytes::<Member>(&old).unwrap(),
                Member {
                    raft_addr: addr.into(),
                    client: ClientAddrs::default(),
                }
            );
        }
    }

    /// Inside a map the record must take exactly its own bytes, or every following node
    /// would be misread: old and new records mix in one membership after an upgrade.
    #[test]
    fn records_in_a_map_keep_their_bounds() {
        use std::collections::BTreeMap;
        let mut old = BTreeMap::new();
        old.insert(1u64, BasicNode { addr: "a:1".into() });
        old.insert(2u64, BasicNode { addr: "b:2".into() });
        let read: BTreeMap<u64, Member> =
            postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(read[&1].raft_addr, "a:1");
        assert_eq!(read[&2].raft_addr, "b:2");

        let new = BTreeMap::from([(1u64, full()), (2u64, Member::default())]);
        let bytes = postcard::to_allocvec(&new).unwrap();
        assert_eq!(
            postcard::from_bytes::<BTreeMap<u64, Member>>(&bytes).unwrap(),
            new
        );
    }

    #[test]
    fn unknown_layouts_and_damaged_records_are_errors() {
        let mut newer = full().to_layout().unwrap();
        newer[1] = LAYOUT + 1;
        let wrapped = postcard::to_allocvec(&serde_bytes(&newer)).unwrap();
        let err = postcard::from_bytes::<Member>(&wrapped).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        assert!(Member::from_layout(&newer)
            .unwrap_err()
            .contains("layout 2 is newer"));

        let mut longer = full().to_layout().unwrap();
        longer.push(0);
        assert!(Member::from_layout(&longer).is_err());
        let short = full().to_layout().unwrap();
        assert!(Member::from_layout(&short[..short.len() - 1]).is_err());
        assert!(Member::from_layout(&[MARKER]).is_err());
        assert!(Member::from_layout(&[0xC3, 0x28]).is_err(), "not UTF-8");
    }

    /// Wraps raw bytes the way postcard writes a byte string.
    fn serde_bytes(bytes: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }
}
