//! `corvid status`: one screen about a running server, read from its admin listener's
//! `/status` (see corvid-server's `admin`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use corvid_server::admin::Status;

use crate::error::EXIT_CONNECTION;

/// How long the admin listener has to connect and to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of an answer read; `/status` is a few hundred.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

pub fn run(admin: &str) -> ExitCode {
    match fetch(admin) {
        Ok(status) => match crate::commands::print_line(screen(&status).trim_end()) {
            Ok(()) => ExitCode::SUCCESS,
            // A closed stdout (`| head -1`): one error line, not a panic.
            Err(err) => {
                eprintln!("{}", err.line());
                ExitCode::FAILURE
            }
        },
        Err(err) => {
            eprintln!("error: {err} (unreachable)");
            ExitCode::from(EXIT_CONNECTION)
        }
    }
}

/// GETs `/status` over plain HTTP/1.1 and decodes it.
fn fetch(admin: &str) -> Result<Status, String> {
    let address = admin
        .to_socket_addrs()
        .map_err(|e| format!("{admin}: {e}"))?
        .next()
        .ok_or_else(|| format!("{admin}: no address"))?;
    let cannot = |e: std::io::Error| format!("cannot read the status from {admin}: {e}");
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(cannot)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(cannot)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(cannot)?;
    let request = format!("GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(cannot)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .map_err(cannot)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{admin} did not answer over HTTP"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{admin} answered `{status_line}`"));
    }
    serde_json::from_str(body).map_err(|e| format!("{admin} sent an unreadable status: {e}"))
}

/// The screen, one figure a line.
fn screen(status: &Status) -> String {
    let ready = match &status.not_ready {
        None => "yes".to_string(),
        Some(reason) => format!("no: {reason}"),
    };
    let leader = status
        .leader_id
        .map_or("none known".to_string(), |id| id.to_string());
    [
        ("version", status.version.clone()),
        ("uptime", duration(status.uptime_seconds)),
        ("role", format!("{} (node {})", status.role, status.node_id)),
        ("leader", format!("{leader} (term {})", status.term)),
        ("ready", ready),
        ("connections", status.connections.to_string()),
        (
            "messages/s",
            format!("{:.1} (last minute)", status.messages_per_second),
        ),
        (
            "log",
            format!(
                "last {}, committed {}, applied {}",
                status.last_log_index, status.committed_index, status.applied_index
            ),
        ),
        (
            "data",
            format!("{} in {}", bytes(status.data_dir_bytes), status.data_dir),
        ),
    ]
    .iter()
    .map(|(name, value)| format!("{name:<12} {value}\n"))
    .collect()
}

fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else if hours > 0 {
        format!("{hours}h {minutes}m {seconds}s")
    } else {
        format!("{minutes}m {seconds}s")
    }
}

fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_has_every_figure_an_operator_reads() {
        let status = Status {
            version: "0.1.0".into(),
            uptime_seconds: 3725.0,
            node_id: 1,
            role: "leader".into(),
            leader_id: Some(1),
            term: 2,
            not_ready: None,
            connections: 12,
            messages_per_second: 1500.0,
            last_log_index: 90,
            committed_index: 90,
            applied_index: 89,
            data_dir: "/var/lib/corvid".into(),
            data_dir_bytes: 3 << 20,
        };
        let screen = screen(&status);
        for expected in [
            "version      0.1.0\n",
            "uptime       1h 2m 5s\n",
            "role         leader (node 1)\n",
            "leader       1 (term 2)\n",
            "ready        yes\n",
            "connections  12\n",
            "messages/s   1500.0 (last minute)\n",
            "log          last 90, committed 90, applied 89\n",
            "data         3.0 MiB in /var/lib/corvid\n",
        ] {
            assert!(screen.contains(expected), "{expected:?} in\n{screen}");
        }
    }
}
