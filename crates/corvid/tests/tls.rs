//! End-to-end TLS: a server with a certificate made at test time (rcgen), a whole session
//! over TLS, and clients without the right CA that fail with one clear line.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{stderr, Server, Transport, User, PASSWORD};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

over_both_transports!(a_session_over_tls_works_and_clients_without_the_ca_are_refused);

/// A CA, a server certificate it signed (for `localhost` and 127.0.0.1) with its key, and
/// an unrelated CA, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn make_pki(dir: &Path) -> Pki {
    let ca = certificate_authority("Corvid test CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "corvid test server");
    let cert = params.signed_by(&key, &ca).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        other_ca: dir.join("other-ca.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.other_ca, certificate_authority("Someone else").pem()).unwrap();
    pki
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

/// Asserts that `user` cannot even register: exit status 3 and one line on stderr.
fn refused(user: &User) -> String {
    let output = user.run_with_input(
        &["--password-stdin", "register", &user.name],
        &format!("{PASSWORD}\n"),
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn a_session_over_tls_works_and_clients_without_the_ca_are_refused(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--tls-cert", cert, "--tls-key", key],
        &[],
    );
    let alice = User::new(dir.path(), "alice", &server, transport).with_tls_ca(&pki.ca);
    let bob = User::new(dir.path(), "bob", &server, transport).with_tls_ca(&pki.ca);
    for user in [&alice, &bob] {
        user.register();
        user.login();
    }

    // A live push and a read, all inside TLS.
    let listener = bob.listen();
    let deadline = Instant::now() + Duration::from_secs(15);
    while json(&alice.ok(&["--json", "users", "bob"]))["accounts"][0]["online"] != true {
        assert!(Instant::now() < deadline, "bob never came online");
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.ok(&["send", "bob", "over tls"]);
    assert_eq!(listener.next()["text"], "over tls");
    listener.stop();

    // The session remembers TLS: a later command needs no --tls-ca.
    let bob_again = User {
        tls_ca: None,
        ..User::new(dir.path(), "bob", &server, transport)
    };
    let history = json(&bob_again.ok(&["--json", "history", "alice"]));
    assert_eq!(history["messages"][0]["text"], "over tls");

    // Without TLS, or trusting another CA, a client gets one clear line and exit 3.
    let plain = User::new(dir.path(), "plain", &server, transport);
    refused(&plain);
    let fooled = User::new(dir.path(), "fooled", &server, transport).with_tls_ca(&pki.other_ca);
    let err = refused(&fooled);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}
