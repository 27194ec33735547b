//! The handshake: eight bytes from the client, eight bytes back, before any frame.
//!
//! ```text
//! client: 43 52 56 44 | u16 version | u16 flags
//! server: 43 52 56 44 | u16 version | u16 status
//! ```

/// The first four bytes of both hellos: ASCII `CRVD`.
pub const MAGIC: [u8; 4] = *b"CRVD";
/// The newest protocol version this crate speaks. Version 2 adds the `oldest unread`
/// start of `Subscribe`; version 3 the leader's address after a `not_leader` error;
/// everything else is as in version 1.
pub const VERSION: u16 = 3;
/// The oldest protocol version this crate still speaks.
pub const MIN_VERSION: u16 = 1;
/// The size of either hello.
pub const HELLO_LEN: usize = 8;

/// Why eight bytes are not a hello. The connection cannot go on: the peer speaks
/// something else.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("the peer does not speak the Corvid protocol (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unknown handshake status {0}")]
    UnknownStatus(u16),
}

/// The client's opening eight bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// Reserved: clients send 0, and servers ignore them.
    pub flags: u16,
}

impl ClientHello {
    /// The hello of a client that speaks [`VERSION`].
    pub const CURRENT: ClientHello = ClientHello {
        version: VERSION,
        flags: 0,
    };

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        encode(self.version, self.flags)
    }

    pub fn decode(bytes: [u8; HELLO_LEN]) -> Result<ClientHello, HelloError> {
        let (version, flags) = decode(bytes)?;
        Ok(ClientHello { version, flags })
    }
}

impl Default for ClientHello {
    fn default() -> ClientHello {
        ClientHello::CURRENT
    }
}

/// Whether the server accepts the client's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum HelloStatus {
    /// Frames follow.
    Ok = 0,
    /// The server does not speak the client's version, and closes the connection.
    UnsupportedVersion = 1,
}

/// The server's answer to a [`ClientHello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// The protocol version the server speaks.
    pub version: u16,
    pub status: HelloStatus,
}

impl ServerHello {
    /// The answer of a server that speaks versions [`MIN_VERSION`] to [`VERSION`] to
    /// `hello`: the client's version when it is one of them (the connection then speaks
    /// it), else a refusal that names the newest.
    pub fn answer(hello: &ClientHello) -> ServerHello {
        if (MIN_VERSION..=VERSION).contains(&hello.version) {
            ServerHello {
                version: hello.version,
                status: HelloStatus::Ok,
            }
        } else {
            ServerHello {
                version: VERSION,
                status: HelloStatus::UnsupportedVersion,
            }
        }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        encode(self.version, self.status as u16)
    }

    pub fn decode(bytes: [u8; HELLO_LEN]) -> Result<ServerHello, HelloError> {
        let (version, status) = decode(bytes)?;
        let status = match status {
            0 => HelloStatus::Ok,
            1 => HelloStatus::UnsupportedVersion,
            other => return Err(HelloError::UnknownStatus(other)),
        };
        Ok(ServerHello { version, status })
    }
}

fn encode(version: u16, last: u16) -> [u8; HELLO_LEN] {
    let [v0, v1] = version.to_be_bytes();
    let [l0, l1] = last.to_be_bytes();
    let [m0, m1, m2, m3] = MAGIC;
    [m0, m1, m2, m3, v0, v1, l0, l1]
}

fn decode(bytes: [u8; HELLO_LEN]) -> Result<(u16, u16), HelloError> {
    let [m0, m1, m2, m3, v0, v1, l0, l1] = bytes;
    let magic = [m0, m1, m2, m3];
    if magic != MAGIC {
        return Err(HelloError::BadMagic(magic));
    }
    Ok((u16::from_be_bytes([v0, v1]), u16::from_be_bytes([l0, l1])))
}
