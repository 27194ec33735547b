//! The session file: who is logged in, where, with which token, and the last message
//! `listen` printed. JSON, readable by its owner only (mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

use corvid_client::Protocol;
use corvid_core::{MessageId, Token};
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// What the session file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The servers the session was opened with; later commands use them by default.
    pub servers: Vec<String>,
    /// The protocol the session was opened with, `wire` or `grpc` (absent: wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The CA file the session was opened with, if it speaks TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The server name its certificates were checked against, if not the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    pub username: String,
    /// The session token, 32 hexadecimal digits. A credential.
    pub token: String,
    /// The id of the last message `listen` printed, so it can resume after it.
    #[serde(default)]
    pub last_seen: Option<u64>,
}

impl Session {
    pub fn new(
        servers: Vec<String>,
        transport: Protocol,
        username: String,
        token: Token,
    ) -> Session {
        Session {
            servers,
            transport: Some(transport.name().to_string()),
            tls_ca: None,
            tls_server_name: None,
            username,
            token: token.to_hex(),
            last_seen: None,
        }
    }

    /// The token, if the file holds a well-formed one.
    pub fn token(&self) -> Option<Token> {
        Token::from_hex(&self.token)
    }

    /// The session's protocol; a file that names none, or one this build does not know,
    /// reads as the binary protocol.
    pub fn transport(&self) -> Protocol {
        self.transport
            .as_deref()
            .and_then(|name| name.parse().ok())
            .unwrap_or_default()
    }

    pub fn last_seen(&self) -> Option<MessageId> {
        self.last_seen.map(MessageId)
    }
}

/// `<config dir>/corvid/session.json`, unless `--session` or `CORVID_SESSION` says otherwise.
pub fn default_path() -> Result<PathBuf, CliError> {
    dirs::config_dir()
        .map(|dir| dir.join("corvid").join("session.json"))
        .ok_or_else(|| {
            CliError::usage("this system has no configuration directory; pass --session FILE")
        })
}

/// Reads the session at `path`; `None` if there is no file.
pub fn load(path: &Path) -> Result<Option<Session>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(CliError::session_file(format!(
                "cannot read {}: {err}",
                path.display()
            )))
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|err| {
        CliError::session_file(format!(
            "{} is damaged ({err}); run corvid login NAME",
            path.display()
        ))
    })
}

/// Writes `session` to `path` atomically, readable and writable by the owner only.
pub fn save(path: &Path, session: &Session) -> Result<(), CliError> {
    let fail = |err: std::io::Error| {
        CliError::session_file(format!("cannot write {}: {err}", path.display()))
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    create_private_dir(dir).map_err(fail)?;
    let mut json = serde_json::to_vec_pretty(session)
        .map_err(|err| CliError::session_file(format!("cannot encode the session: {err}")))?;
    json.push(b'\n');
    // Written beside the target and renamed over it, so a reader never sees half a file.
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "session.json".to_string());
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = write_private(&temporary, &json).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(fail)
}

/// Removes the session file; a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(CliError::session_file(format!(
            "cannot remove {}: {err}",
            path.display()
        ))),
    }
}

/// Removes the session file if it still holds `token` (another login may have replaced it).
pub fn remove_if_token(path: &Path, token: Token) -> Result<(), CliError> {
    match load(path) {
        Ok(Some(session)) if session.token() == Some(token) => remove(path),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // A leftover file from a crashed run keeps its old mode; set it again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        let mut session = Session::new(
            vec!["127.0.0.1:7070".to_string(), "10.0.0.2:7070".to_string()],
            Protocol::Grpc,
            "alice".to_string(),
            Token([0xab; 16]),
        );
        session.last_seen = Some(42);
        session
    }

    #[test]
    fn a_session_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("session.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample()).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded, sample());
        assert_eq!(loaded.token(), Some(Token([0xab; 16])));
        assert_eq!(loaded.last_seen(), Some(MessageId(42)));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["token"], "ab".repeat(16));
        assert_eq!(json["username"], "alice");
        assert_eq!(json["last_seen"], 42);
        assert_eq!(json["transport"], "grpc");
        assert_eq!(loaded.transport(), Protocol::Grpc);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn removing_is_idempotent_and_respects_a_newer_login() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        save(&path, &sample()).unwrap();
        remove_if_token(&path, Token([0x01; 16])).unwrap();
        assert!(load(&path).unwrap().is_some(), "another token: kept");
        remove_if_token(&path, Token([0xab; 16])).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        remove(&path).unwrap();
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        std::fs::write(&path, "not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.message().contains("damaged"), "{}", err.message());
    }

    #[test]
    fn a_file_without_last_seen_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        std::fs::write(
            &path,
            r#"{"servers":["a:1"],"username":"bob","token":"00112233445566778899aabbccddeeff"}"#,
        )
        .unwrap();
        let session = load(&path).unwrap().unwrap();
        assert_eq!(session.last_seen, None);
        assert_eq!(session.transport(), Protocol::Wire);
        assert!(session.token().is_some());
    }
}
