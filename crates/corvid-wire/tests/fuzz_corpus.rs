//! Replays the committed fuzz corpus through `fuzzing::check`, so that every input the
//! fuzzer ever kept, crashes it found included, runs on each `cargo test`.

use std::path::Path;

#[test]
fn every_corpus_input_passes_the_fuzz_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| corvid_wire::fuzzing::check(&data));
        assert!(outcome.is_ok(), "{} fails the fuzz check", path.display());
        replayed += 1;
    }
    assert!(replayed > 0, "the corpus in {} is empty", dir.display());
}
