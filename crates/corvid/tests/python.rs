//! Interoperability: a Python gRPC client made from `proto/corvid.proto` alone, with the
//! `grpcio` and `grpcio-tools` packages from PyPI, runs a whole scenario against a real
//! `corvid serve`. It proves the .proto is usable by others as written.
//!
//! The packages go into a virtual environment under `target/` (made once, reused while
//! `tests/python/requirements.txt` is unchanged); the stubs are generated afresh each run.
//! `CORVID_PYTHON` names the interpreter that makes the venv (default `python3`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, Transport};

const PIP_DEADLINE: Duration = Duration::from_secs(600);
const SCENARIO_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `command` to completion, or kills it at `deadline`; stdout and stderr are kept.
fn run_bounded(command: &mut Command, deadline: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let pid = child.id();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(deadline) {
        Ok(output) => output.expect("the child's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command:?} did not finish within {deadline:?}");
        }
    }
}

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The venv's interpreter, with the pinned requirements installed.
fn python_with_requirements(requirements: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let base = std::env::var("CORVID_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let made = run_bounded(
            Command::new(&base).arg("-m").arg("venv").arg(&venv),
            PIP_DEADLINE,
        );
        check(&format!("{base} -m venv"), &made);
    }
    let wanted = std::fs::read_to_string(requirements).expect("requirements.txt");
    let marker = venv.join("corvid-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let installed = run_bounded(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg("--requirement")
                .arg(requirements),
            PIP_DEADLINE,
        );
        check("pip install", &installed);
        std::fs::write(&marker, &wanted).expect("the venv's marker");
    }
    python
}

#[test]
fn a_python_client_generated_from_the_proto_runs_the_whole_scenario() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("../../proto");
    let here = manifest.join("tests/python");
    let python = python_with_requirements(&here.join("requirements.txt"));

    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let generated = run_bounded(
        Command::new(&python)
            .args(["-m", "grpc_tools.protoc"])
            .arg("-I")
            .arg(&proto_dir)
            .arg(format!("--python_out={}", stubs.display()))
            .arg(format!("--grpc_python_out={}", stubs.display()))
            .arg(proto_dir.join("corvid.proto")),
        SCENARIO_DEADLINE,
    );
    check("grpc_tools.protoc", &generated);
    assert!(stubs.join("corvid_pb2_grpc.py").exists());

    let server = Server::start(&dir.path().join("data"));
    let ran = run_bounded(
        Command::new(&python)
            .arg(here.join("scenario.py"))
            .arg("--stubs")
            .arg(&stubs)
            .arg("--server")
            .arg(server.address(Transport::Grpc).to_string()),
        SCENARIO_DEADLINE,
    );
    check("scenario.py", &ran);
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("corvid python scenario: OK"),
        "{stdout}"
    );
}
