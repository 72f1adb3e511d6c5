//! Shell-free command handling: turning a request into an argument vector, never through a shell.
//!
//! A request carries either `args` (taken exactly as given) or one `command` line, which is split
//! into words with the POSIX quoting rules of the `shlex` crate. Nothing here expands anything:
//! `;`, `|`, `&&`, backticks, `$(...)`, `>` and newlines inside quotes are ordinary characters of
//! an argument, because no shell ever sees them. Two inputs are refused rather than guessed at:
//! an unquoted `#` starting a word (shlex would drop the rest of the line as a comment, losing
//! what the caller wrote) and NUL bytes (they cannot be passed to `execve`).
//!
//! The argument rules a policy states are checked by [`rules`].

pub mod rules;

use std::fmt;

/// The arguments that follow a tool's program, as they will reach `execve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    /// Takes arguments given one by one, refusing NUL bytes and input past `max_bytes` in total.
    pub fn from_args(args: Vec<String>, max_bytes: usize) -> Result<Self, Error> {
        let total: usize = args.iter().map(String::len).sum();
        if total > max_bytes {
            return Err(Error::TooLong {
                len: total,
                limit: max_bytes,
            });
        }
        for (index, arg) in args.iter().enumerate() {
            if let Some(at) = arg.find('\0') {
                return Err(Error::NulInArgument {
                    index: index + 1,
                    at,
                });
            }
        }
        Ok(Self(args))
    }

    /// The arguments in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Consumes the vector.
    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

/// A command line split into its first word (which names the program) and the arguments after it.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandLine {
    /// The first word: the tool's name or its program's file name.
    pub program: String,
    /// The words after it.
    pub argv: Argv,
}

/// Splits one command line with POSIX quoting rules, without a shell.
pub fn split_command(line: &str, max_bytes: usize) -> Result<CommandLine, Error> {
    let mut words = split_words(line, max_bytes)?.into_iter();
    let program = words.next().ok_or(Error::Empty)?;
    Ok(CommandLine {
        program,
        argv: Argv(words.collect()),
    })
}

/// Splits a line of arguments only (no program word), as policy examples are written.
pub fn split_args(line: &str, max_bytes: usize) -> Result<Argv, Error> {
    split_words(line, max_bytes).map(Argv)
}

fn split_words(line: &str, max_bytes: usize) -> Result<Vec<String>, Error> {
    if line.len() > max_bytes {
        return Err(Error::TooLong {
            len: line.len(),
            limit: max_bytes,
        });
    }
    if let Some(at) = line.find('\0') {
        return Err(Error::NulInCommand {
            at: Position::of(line, at),
        });
    }
    check_quoting(line)?;
    shlex::split(line).ok_or(Error::Unparsable)
}

/// Finds what shlex would reject or silently drop, so the error can say where it is.
///
/// Mirrors shlex's POSIX states: outside quotes a backslash escapes the next byte; inside single
/// quotes nothing is special; inside double quotes a backslash escapes the next byte.
fn check_quoting(line: &str) -> Result<(), Error> {
    #[derive(Clone, Copy)]
    enum State {
        Plain,
        Single(usize),
        Double(usize),
    }
    let bytes = line.as_bytes();
    let mut state = State::Plain;
    let mut word_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match state {
            State::Plain => match byte {
                b' ' | b'\t' | b'\n' => word_start = true,
                b'#' if word_start => {
                    return Err(Error::Comment {
                        at: Position::of(line, i),
                    });
                }
                b'\\' if i + 1 == bytes.len() => {
                    return Err(Error::TrailingBackslash {
                        at: Position::of(line, i),
                    });
                }
                b'\\' => {
                    i += 1;
                    word_start = false;
                }
                b'\'' => {
                    state = State::Single(i);
                    word_start = false;
                }
                b'"' => {
                    state = State::Double(i);
                    word_start = false;
                }
                _ => word_start = false,
            },
            State::Single(_) if byte == b'\'' => state = State::Plain,
            State::Double(_) if byte == b'\\' => i += 1,
            State::Double(_) if byte == b'"' => state = State::Plain,
            State::Single(_) | State::Double(_) => {}
        }
        i += 1;
    }
    match state {
        State::Plain => Ok(()),
        State::Single(at) => Err(Error::UnbalancedQuote {
            quote: '\'',
            at: Position::of(line, at),
        }),
        State::Double(at) => Err(Error::UnbalancedQuote {
            quote: '"',
            at: Position::of(line, at),
        }),
    }
}

/// A place in a command line, for error messages: 1-based line and column (in characters) and
/// the 0-based byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// 0-based byte offset.
    pub byte: usize,
}

impl Position {
    /// The position of byte offset `at` in `text`.
    pub fn of(text: &str, at: usize) -> Self {
        let before = &text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            byte: at,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a request's command or arguments cannot be turned into an argument vector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The command line has no words.
    #[error("the command is empty: start it with the tool's name, then its arguments")]
    Empty,
    /// The command or the arguments exceed the configured size.
    #[error("the command is {len} bytes long; the limit is {limit} bytes")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// A NUL byte inside the command line.
    #[error("the command has a NUL byte at {at}; NUL cannot be part of an argument")]
    NulInCommand {
        /// Where.
        at: Position,
    },
    /// A NUL byte inside one of the given arguments.
    #[error("argument {index} has a NUL byte at byte {at}; NUL cannot be part of an argument")]
    NulInArgument {
        /// 1-based index of the argument.
        index: usize,
        /// Byte offset in it.
        at: usize,
    },
    /// A quote that is never closed.
    #[error(
        "unbalanced {quote} quote opened at {at}: close it, or escape it with a backslash to pass it literally"
    )]
    UnbalancedQuote {
        /// The quote character.
        quote: char,
        /// Where it opens.
        at: Position,
    },
    /// A backslash with nothing after it.
    #[error(
        "the command ends with a backslash at {at}: remove it, or write \\\\ for a literal one"
    )]
    TrailingBackslash {
        /// Where.
        at: Position,
    },
    /// An unquoted `#` at the start of a word, which POSIX splitting treats as a comment.
    #[error(
        "unquoted '#' at {at} would start a comment and drop the rest of the line; quote it ('#') to pass it literally"
    )]
    Comment {
        /// Where.
        at: Position,
    },
    /// The splitter refused the line for a reason the pre-check did not find.
    #[error("the command cannot be split into words; check its quoting")]
    Unparsable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(line: &str) -> Result<Vec<String>, Error> {
        split_command(line, 1 << 16).map(|c| {
            let mut words = vec![c.program];
            words.extend(c.argv.into_vec());
            words
        })
    }

    #[test]
    fn metacharacters_are_ordinary_characters() {
        assert_eq!(
            split("echo hi; touch X").unwrap(),
            ["echo", "hi;", "touch", "X"]
        );
        assert_eq!(split("echo '$(touch X)'").unwrap(), ["echo", "$(touch X)"]);
        assert_eq!(
            split("echo `id` | tee X").unwrap(),
            ["echo", "`id`", "|", "tee", "X"]
        );
        assert_eq!(split("echo a&&b >x").unwrap(), ["echo", "a&&b", ">x"]);
        assert_eq!(split("echo 'a\nb'").unwrap(), ["echo", "a\nb"]);
        assert_eq!(split("echo a#b").unwrap(), ["echo", "a#b"]);
        assert_eq!(split("echo '#'").unwrap(), ["echo", "#"]);
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(
            split("echo 'abc").unwrap_err().to_string(),
            "unbalanced ' quote opened at line 1, column 6: close it, or escape it with a backslash to pass it literally"
        );
        assert!(matches!(
            split("echo \"a\nb 'c' d").unwrap_err(),
            Error::UnbalancedQuote {
                quote: '"',
                at: Position {
                    line: 1,
                    column: 6,
                    ..
                }
            }
        ));
        assert!(matches!(
            split("echo ok\necho 'x").unwrap_err(),
            Error::UnbalancedQuote {
                quote: '\'',
                at: Position {
                    line: 2,
                    column: 6,
                    ..
                }
            }
        ));
        assert!(matches!(
            split("echo hi # rm -rf").unwrap_err(),
            Error::Comment {
                at: Position { column: 9, .. }
            }
        ));
        assert!(matches!(
            split("echo \\").unwrap_err(),
            Error::TrailingBackslash { .. }
        ));
        assert_eq!(split("   ").unwrap_err(), Error::Empty);
        assert!(matches!(
            split("echo a\0b").unwrap_err(),
            Error::NulInCommand { .. }
        ));
        assert!(matches!(
            split_command("echo hello", 4).unwrap_err(),
            Error::TooLong { len: 10, limit: 4 }
        ));
    }

    #[test]
    fn given_args_are_checked_for_nul_and_size() {
        assert!(Argv::from_args(vec!["a;b".into()], 10).is_ok());
        assert_eq!(
            Argv::from_args(vec!["ok".into(), "a\0".into()], 10).unwrap_err(),
            Error::NulInArgument { index: 2, at: 1 }
        );
        assert!(matches!(
            Argv::from_args(vec!["abcdef".into()], 5).unwrap_err(),
            Error::TooLong { .. }
        ));
    }

    proptest! {
        /// Whatever words a caller quotes with shlex, splitting gives back exactly those words.
        #[test]
        fn quoting_round_trips(words in prop::collection::vec("[^\0]{0,12}", 1..6)) {
            let line = shlex::try_join(words.iter().map(String::as_str)).unwrap();
            prop_assert_eq!(split(&line).unwrap(), words);
        }

        /// No input makes the splitter panic; every failure is one of the typed errors.
        #[test]
        fn never_panics(line in "\\PC{0,40}") {
            let _ = split(&line);
        }
    }
}
