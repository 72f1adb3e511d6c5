//! Argument rules: what a tool's policy allows after its program.
//!
//! Rules read arguments the way `getopt`-style programs do. An argument starting with `-` (other
//! than `-` alone) is a flag until `--` ends the options; `--name=value` is the flag `--name`;
//! `-abc` that is not itself a listed flag is the cluster `-a -b -c`. A flag listed in
//! `flags_with_value` takes the next argument (or the rest of its cluster, or what follows `=`)
//! as its value, which is then neither a flag nor a positional. Everything else is a positional.
//!
//! Checks are default deny where a list is given: with `allow_flags`, only those flags; with
//! `positional`, each positional must fully match one of the patterns. `deny_flags` also refuses
//! unambiguous abbreviations of a denied long flag (`--upload-pa` for `--upload-pack`), because
//! `getopt_long` accepts them. `deny_patterns` apply to every argument, values included.

use regex::Regex;

use super::Argv;

/// A regular expression that must match a whole argument.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source`, anchored at both ends.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: source.to_owned(),
            regex: Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    /// The pattern as written in the policy.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// The compiled argument rules of one tool.
#[derive(Clone, Debug, Default)]
pub struct ArgRules {
    /// Most arguments a request may give.
    pub max_count: Option<usize>,
    /// Longest single argument, in bytes.
    pub max_length: Option<usize>,
    /// When set, the only flags allowed.
    pub allow_flags: Option<Vec<String>>,
    /// Flags always refused (with their long-option abbreviations).
    pub deny_flags: Vec<String>,
    /// Flags that take a value.
    pub flags_with_value: Vec<String>,
    /// Patterns no argument may match.
    pub deny_patterns: Vec<Pattern>,
    /// When set, each positional must match one of these.
    pub positional: Option<Vec<Pattern>>,
    /// What positionals are, in words, for callers (e.g. "a relative path in the workspace").
    pub positional_help: Option<String>,
    /// Whether `--` ends the options (true for getopt-style programs).
    pub end_of_options: bool,
    /// When set, the first argument must be one of these words (a program with subcommands,
    /// like `git log`); the rules above then apply to the arguments after it.
    pub subcommands: Option<Vec<String>>,
}

/// Why a rule refused an argument vector; `rule` names the policy key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (rule arguments.{rule})")]
pub struct Denied {
    /// The policy key of the rule, under `arguments.`.
    pub rule: &'static str,
    /// What was refused and what is allowed instead.
    pub message: String,
}

fn deny(rule: &'static str, message: String) -> Result<(), Denied> {
    Err(Denied { rule, message })
}

/// One argument as the program will read it.
enum Kind<'a> {
    /// A flag name (for `--name=value`, the part before `=`).
    Flag(&'a str),
    /// A short-flag cluster such as `-la`.
    Cluster(&'a str),
    Positional,
    /// The value of the flag before it.
    Value,
    /// The `--` that ends the options.
    EndOfOptions,
}

impl ArgRules {
    /// Checks `argv` against every rule; the first failing rule is reported.
    pub fn check(&self, argv: &Argv) -> Result<(), Denied> {
        let args = argv.as_slice();
        if let Some(max) = self.max_count
            && args.len() > max
        {
            return deny(
                "max_count",
                format!("{} arguments given; at most {max} are allowed", args.len()),
            );
        }
        for (index, arg) in args.iter().enumerate() {
            if let Some(max) = self.max_length
                && arg.len() > max
            {
                return deny(
                    "max_length",
                    format!(
                        "argument {} is {} bytes long; at most {max} are allowed",
                        index + 1,
                        arg.len()
                    ),
                );
            }
            if let Some(pattern) = self.deny_patterns.iter().find(|p| p.matches(arg)) {
                return deny(
                    "deny_patterns",
                    format!(
                        "argument {} `{arg}` matches the denied pattern `{}`",
                        index + 1,
                        pattern.source()
                    ),
                );
            }
        }
        // With subcommands, the first argument picks one and the other rules read the rest:
        // nothing (no `git -c`, no `git -C`) may come before it.
        let skip = match &self.subcommands {
            None => 0,
            Some(words) => match args.first() {
                Some(first) if words.contains(first) => 1,
                found => {
                    let found = found.map_or("nothing".to_owned(), |f| format!("`{f}`"));
                    return deny(
                        "subcommands",
                        format!(
                            "argument 1 is {found}; it must be one of the subcommands {}",
                            words.join(" ")
                        ),
                    );
                }
            },
        };
        for (index, (arg, kind)) in self.classify(&args[skip..]).into_iter().enumerate() {
            let place = index + 1 + skip;
            match kind {
                Kind::Flag(name) => self.check_flag(place, arg, name)?,
                Kind::Cluster(cluster) => {
                    for letter in cluster[1..].chars() {
                        let short = format!("-{letter}");
                        self.check_flag(place, arg, &short)?;
                        if self.takes_value(&short) {
                            break;
                        }
                    }
                }
                Kind::Positional => self.check_positional(place, arg)?,
                Kind::Value | Kind::EndOfOptions => {}
            }
        }
        Ok(())
    }

    fn takes_value(&self, flag: &str) -> bool {
        self.flags_with_value.iter().any(|f| f == flag)
    }

    fn is_listed(&self, flag: &str) -> bool {
        let in_allow = self
            .allow_flags
            .as_ref()
            .is_some_and(|allow| allow.iter().any(|f| f == flag));
        in_allow || self.deny_flags.iter().any(|f| f == flag) || self.takes_value(flag)
    }

    /// Reads the arguments as the program's option parser would.
    fn classify<'a>(&self, args: &'a [String]) -> Vec<(&'a str, Kind<'a>)> {
        let mut kinds = Vec::with_capacity(args.len());
        let mut options_ended = false;
        let mut value_expected = false;
        for arg in args {
            let arg = arg.as_str();
            let kind = if value_expected {
                value_expected = false;
                Kind::Value
            } else if options_ended || arg == "-" || !arg.starts_with('-') {
                Kind::Positional
            } else if arg == "--" && self.end_of_options {
                options_ended = true;
                Kind::EndOfOptions
            } else if arg.starts_with("--") {
                match arg.split_once('=') {
                    Some((name, _value)) => Kind::Flag(name),
                    None => {
                        value_expected = self.takes_value(arg);
                        Kind::Flag(arg)
                    }
                }
            } else if self.is_listed(arg) || arg.len() == 2 {
                value_expected = self.takes_value(arg);
                Kind::Flag(arg)
            } else {
                // A cluster: a value-taking letter consumes the rest, or the next argument
                // when it is last.
                let letters: Vec<char> = arg[1..].chars().collect();
                if let Some(pos) = letters
                    .iter()
                    .position(|c| self.takes_value(&format!("-{c}")))
                {
                    value_expected = pos + 1 == letters.len();
                }
                Kind::Cluster(arg)
            };
            kinds.push((arg, kind));
        }
        kinds
    }

    fn check_flag(&self, place: usize, arg: &str, name: &str) -> Result<(), Denied> {
        if self.deny_flags.iter().any(|f| f == name) {
            return deny(
                "deny_flags",
                format!("argument {place} `{arg}`: the flag `{name}` is denied by policy"),
            );
        }
        if name.starts_with("--")
            && name.len() > 2
            && let Some(full) = self
                .deny_flags
                .iter()
                .find(|f| f.starts_with("--") && f.starts_with(name))
        {
            return deny(
                "deny_flags",
                format!(
                    "argument {place} `{arg}` abbreviates the denied flag `{full}`; write flags out in full"
                ),
            );
        }
        if let Some(allow) = &self.allow_flags
            && !allow.iter().any(|f| f == name)
        {
            let allowed = if allow.is_empty() {
                "this tool takes no flags".to_owned()
            } else {
                format!("allowed flags: {}", allow.join(" "))
            };
            return deny(
                "allow_flags",
                format!("argument {place} `{arg}`: the flag `{name}` is not allowed; {allowed}"),
            );
        }
        Ok(())
    }

    fn check_positional(&self, place: usize, arg: &str) -> Result<(), Denied> {
        let Some(patterns) = &self.positional else {
            return Ok(());
        };
        if patterns.iter().any(|p| p.matches(arg)) {
            return Ok(());
        }
        let expected = match &self.positional_help {
            Some(help) => help.clone(),
            None if patterns.is_empty() => "this tool takes no positional arguments".to_owned(),
            None => format!(
                "each must match one of: {}",
                patterns
                    .iter()
                    .map(|p| format!("`{}`", p.source()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        deny(
            "positional",
            format!("argument {place} `{arg}` is not an allowed positional argument: {expected}"),
        )
    }

    /// The rules in words, one sentence each, for `ListTools`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(max) = self.max_count {
            lines.push(match max {
                1 => "At most 1 argument.".to_owned(),
                _ => format!("At most {max} arguments."),
            });
        }
        if let Some(max) = self.max_length {
            lines.push(format!("Each argument at most {max} bytes."));
        }
        match &self.allow_flags {
            Some(allow) if allow.is_empty() => lines.push("No flags.".to_owned()),
            Some(allow) => lines.push(format!("Only these flags: {}.", allow.join(" "))),
            None => {}
        }
        if !self.deny_flags.is_empty() {
            lines.push(format!(
                "Never these flags (nor abbreviations): {}.",
                self.deny_flags.join(" ")
            ));
        }
        if !self.flags_with_value.is_empty() {
            lines.push(format!(
                "These flags take a value: {}.",
                self.flags_with_value.join(" ")
            ));
        }
        if let Some(words) = &self.subcommands {
            lines.push(format!(
                "The first argument is one of the subcommands: {}.",
                words.join(" ")
            ));
        }
        for pattern in &self.deny_patterns {
            lines.push(format!("No argument may match `{}`.", pattern.source()));
        }
        match (&self.positional_help, &self.positional) {
            (Some(help), _) => lines.push(format!("Positional arguments: {help}.")),
            (None, Some(patterns)) if patterns.is_empty() => {
                lines.push("No positional arguments.".to_owned())
            }
            (None, Some(patterns)) => lines.push(format!(
                "Each positional argument matches one of: {}.",
                patterns
                    .iter()
                    .map(Pattern::source)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (None, None) => {}
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Argv {
        Argv::from_args(words.iter().map(|w| w.to_string()).collect(), 1 << 16).unwrap()
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn workspace_rules() -> ArgRules {
        ArgRules {
            allow_flags: Some(strings(&["-n", "-l", "-a", "-e", "--color"])),
            deny_flags: strings(&["--exec", "-r"]),
            flags_with_value: strings(&["-e", "--color"]),
            deny_patterns: vec![Pattern::new(r"(.*/)?\.\.(/.*)?").unwrap()],
            positional: Some(vec![Pattern::new(r"[^/-][^\x00]*").unwrap()]),
            end_of_options: true,
            ..ArgRules::default()
        }
    }

    #[test]
    fn allows_what_the_rules_allow() {
        let rules = workspace_rules();
        for ok in [
            &["notes.txt"][..],
            &["-n", "notes.txt"],
            &["-la", "dir/a"],
            &["-e", "/abs/pattern/is/a/value", "f"],
            &["-ne", "-value", "f"],
            &["--color=always", "f"],
            &["--color", "never", "f"],
            &["--", "file"],
        ] {
            assert_eq!(rules.check(&argv(ok)), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn refuses_with_the_rule_named() {
        let rules = workspace_rules();
        for (bad, rule) in [
            (&["/etc/shadow"][..], "positional"),
            (&["../secret"], "deny_patterns"),
            (&["a/../../b"], "deny_patterns"),
            (&["-x", "f"], "allow_flags"),
            (&["-lx", "f"], "allow_flags"),
            (&["--exec"], "deny_flags"),
            (&["--exe"], "deny_flags"),
            (&["-nr", "f"], "deny_flags"),
            (&["--", "-n"], "positional"),
            (&["--color=x", "/etc"], "positional"),
        ] {
            let err = rules.check(&argv(bad)).unwrap_err();
            assert_eq!(err.rule, rule, "{bad:?}: {err}");
        }
    }

    #[test]
    fn counts_and_lengths() {
        let rules = ArgRules {
            max_count: Some(2),
            max_length: Some(3),
            ..ArgRules::default()
        };
        assert!(rules.check(&argv(&["a", "b"])).is_ok());
        assert_eq!(
            rules.check(&argv(&["a", "b", "c"])).unwrap_err().rule,
            "max_count"
        );
        assert_eq!(
            rules.check(&argv(&["abcd"])).unwrap_err().rule,
            "max_length"
        );
    }

    #[test]
    fn without_end_of_options_double_dash_is_a_flag() {
        let rules = ArgRules {
            allow_flags: Some(vec![]),
            ..ArgRules::default()
        };
        assert_eq!(rules.check(&argv(&["--"])).unwrap_err().rule, "allow_flags");
    }

    #[test]
    fn messages_tell_what_is_allowed() {
        let rules = ArgRules {
            positional: Some(vec![Pattern::new("[a-z]+").unwrap()]),
            positional_help: Some("a lower-case word".into()),
            ..ArgRules::default()
        };
        assert_eq!(
            rules.check(&argv(&["X"])).unwrap_err().to_string(),
            "argument 1 `X` is not an allowed positional argument: a lower-case word (rule arguments.positional)"
        );
    }

    #[test]
    fn subcommands_come_first_and_the_rules_read_the_rest() {
        let rules = ArgRules {
            subcommands: Some(strings(&["log", "diff"])),
            allow_flags: Some(strings(&["--oneline"])),
            deny_flags: strings(&["-c", "--upload-pack"]),
            end_of_options: true,
            ..ArgRules::default()
        };
        assert_eq!(rules.check(&argv(&["log", "--oneline"])), Ok(()));
        for (words, rule) in [
            (&["-c", "x=y", "log"][..], "subcommands"),
            (&["push"], "subcommands"),
            (&[], "subcommands"),
            (&["log", "-c"], "deny_flags"),
            (&["log", "--upload-pa=x"], "deny_flags"),
            (&["diff", "--stat"], "allow_flags"),
        ] {
            assert_eq!(
                rules.check(&argv(words)).unwrap_err().rule,
                rule,
                "{words:?}"
            );
        }
        let denied = rules.check(&argv(&["log", "x", "--stat"])).unwrap_err();
        assert!(
            denied.message.starts_with("argument 3 `--stat`"),
            "{}",
            denied.message
        );
    }
}
