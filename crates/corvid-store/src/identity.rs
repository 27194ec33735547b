//! What a data directory says about itself, in the state meta: the data-format version it
//! is written in, and the cluster it belongs to.
//!
//! # Format versions
//!
//! * **1** — directories made before the version was recorded (they have no
//!   `format_version` row): members are openraft's `BasicNode`, and there is no cluster id.
//! * **2** — members are Corvid's [`Member`](crate::Member) record, which also reads version
//!   1's members (see `member`), so a version 1 directory is upgraded by recording the
//!   version, nothing else. The cluster id is recorded once the node is initialized.
//!   Message, account and session records may be checksummed (`corvid_core::records`; a
//!   version 1 record still reads), and deleted accounts' names are kept in the
//!   `former_username` table (created at open when missing). A server older than version 2
//!   must not open such a directory: it would misread checksummed records.
//!
//! A server refuses a directory whose version is newer than [`FORMAT_VERSION`], with one
//! clear error, rather than misread it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The data-format version this server writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// The version of a directory that has no `format_version` row.
pub const UNVERSIONED: u32 = 1;

/// Which cluster a data directory belongs to: 128 random bits, made when the cluster is
/// initialized (a single server is a cluster of one) and kept by every server of it, so
/// that a server started on another cluster's data can refuse to start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl fmt::Display for ClusterId {
    /// 32 lower-case hex digits, as the configuration takes it.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// A cluster id that is not 32 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("a cluster id is 32 hex digits, not {0:?}")]
pub struct BadClusterId(String);

impl FromStr for ClusterId {
    type Err = BadClusterId;

    fn from_str(text: &str) -> Result<ClusterId, BadClusterId> {
        let bad = || BadClusterId(text.to_string());
        // Every character checked first: `from_str_radix` alone would take a sign.
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ClusterId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_reads_back_from_its_text_and_bad_text_is_refused() {
        let id = ClusterId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(id.to_string().parse::<ClusterId>().unwrap(), id);
        assert_eq!(
            "00112233445566778899AABBCCDDEEFF"
                .parse::<ClusterId>()
                .unwrap()
                .to_string(),
            "00112233445566778899aabbccddeeff"
        );
        for bad in [
            "",
            "ab",
            &"ab".repeat(17),
            &"zz".repeat(16),
            &"+1".repeat(16),
            &"é".repeat(16),
        ] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad:?}");
        }
    }
}
