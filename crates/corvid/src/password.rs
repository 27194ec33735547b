//! Reading a password: from the terminal without echo, or from the first line of stdin.

use std::io::BufRead;

use crate::error::CliError;

/// Where the password comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Prompt on the terminal, without echo.
    Terminal,
    /// The first line of standard input (`--password-stdin`).
    Stdin,
}

/// Reads one password.
pub fn read(source: Source, prompt: &str) -> Result<String, CliError> {
    match source {
        Source::Stdin => first_line(std::io::stdin().lock()),
        Source::Terminal => prompt_terminal(prompt),
    }
}

/// Reads a new password: from the terminal it is asked twice and both must match.
pub fn read_new(source: Source) -> Result<String, CliError> {
    match source {
        Source::Stdin => read(source, ""),
        Source::Terminal => {
            let first = prompt_terminal("New password: ")?;
            let second = prompt_terminal("Repeat the password: ")?;
            if first == second {
                Ok(first)
            } else {
                Err(CliError::local(
                    "password_mismatch",
                    "the two passwords differ",
                ))
            }
        }
    }
}

fn prompt_terminal(prompt: &str) -> Result<String, CliError> {
    rpassword::prompt_password(prompt).map_err(|err| {
        CliError::usage(format!(
            "cannot read the password from the terminal ({err}); use --password-stdin"
        ))
    })
}

/// The first line of `input` without its line ending. Nothing at all is an error; an
/// empty line is a (short) password that the server will judge.
fn first_line(mut input: impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .map_err(|err| CliError::usage(format!("cannot read the password from stdin: {err}")))?;
    if read == 0 {
        return Err(CliError::usage(
            "--password-stdin was given but standard input is empty",
        ));
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_the_password() {
        let cases: [(&[u8], &str); 4] = [
            (b"secret123\nignored\n", "secret123"),
            (b"with spaces  \r\n", "with spaces  "),
            (b"no newline", "no newline"),
            (b"\n", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(first_line(input).unwrap(), expected);
        }
        assert!(first_line(&b""[..]).is_err());
    }
}
