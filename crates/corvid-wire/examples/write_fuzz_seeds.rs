//! Writes the seed inputs of the `decode` fuzz target: one file per sample frame, plus a
//! whole client session (hello and pipelined requests) and a few broken frames.
//!
//! Run from anywhere: `cargo run -p corvid-wire --example write_fuzz_seeds`.

use std::path::Path;

use bytes::BytesMut;
use corvid_wire::fuzzing::samples;
use corvid_wire::{encode, ClientHello, Frame};

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    std::fs::create_dir_all(&dir)?;
    let mut session = BytesMut::from(&ClientHello::CURRENT.encode()[..]);
    for (name, frame) in samples() {
        let mut bytes = BytesMut::new();
        encode(&frame, &mut bytes).map_err(std::io::Error::other)?;
        if matches!(frame, Frame::Request { .. }) {
            session.extend_from_slice(&bytes);
        }
        std::fs::write(dir.join(format!("seed-{name}")), &bytes)?;
    }
    std::fs::write(dir.join("seed-session"), &session)?;
    // An unknown opcode followed by a ping, and an oversized length prefix.
    std::fs::write(
        dir.join("seed-unknown-opcode"),
        [0, 0, 0, 5, 0x40, 0, 0, 0, 1, 0, 0, 0, 5, 0x01, 0, 0, 0, 2],
    )?;
    std::fs::write(dir.join("seed-too-large"), [0xff, 0xff, 0xff, 0xff, 0x01])?;
    println!("wrote seeds to {}", dir.display());
    Ok(())
}
