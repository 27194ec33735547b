//! `corvid check --data DIR`: verifies a stopped server's data directory and prints one
//! line per problem (see `corvid_store::check` for what is checked).

use std::path::Path;
use std::process::ExitCode;

/// Exit status when the directory is sound.
const EXIT_SOUND: u8 = 0;
/// Exit status when problems were found.
const EXIT_PROBLEMS: u8 = 1;
/// Exit status when the directory could not be checked at all.
const EXIT_NOT_CHECKED: u8 = 2;

pub fn run(data: &Path) -> ExitCode {
    // A closed stdout (`| head -1`) ends the output with one error line, not a panic; the
    // exit status still says what the check found.
    let mut closed = None;
    let mut print = |line: String| {
        if closed.is_none() {
            if let Err(err) = crate::commands::print_line(line) {
                eprintln!("{}", err.line());
                closed = Some(err);
            }
        }
    };
    let result =
        corvid_store::check::check_data_dir(data, &mut |problem| print(problem.to_string()));
    match result {
        Err(err) => {
            eprintln!("error: {err} (check)");
            ExitCode::from(EXIT_NOT_CHECKED)
        }
        Ok(summary) => {
            let state = &summary.state;
            let snapshot = summary
                .snapshot_rows
                .map_or("no snapshot".to_string(), |rows| {
                    format!("a snapshot of {rows} rows")
                });
            let counts = format!(
                "log: {} records, {} entries; state: {} accounts, {} sessions, {} messages \
                 ({} records older than checksums); {snapshot}",
                summary.log_records,
                summary.log_entries,
                state.accounts,
                state.sessions,
                state.messages,
                state.unchecked_records,
            );
            if summary.problems == 0 {
                print(format!("ok: {counts}"));
                ExitCode::from(EXIT_SOUND)
            } else {
                print(format!("{} problem(s) found; {counts}", summary.problems));
                ExitCode::from(EXIT_PROBLEMS)
            }
        }
    }
}
