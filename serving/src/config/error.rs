//! Config errors: every problem found in one pass, each naming its key.

use std::fmt;

/// Where in the config text a problem is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub(super) fn of_offset(text: &str, offset: usize) -> Location {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// One problem with a config: the key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The full key path, like `stream[0].receiver[1].listen`; empty when
    /// the problem is not tied to a key (an unreadable file, TOML syntax).
    pub key: String,
    /// What is wrong, naming the bad value and what is expected. One line.
    pub message: String,
    /// Where the key (or the syntax error) is in the file, when known. Keys
    /// that were not written in the file (defaults) have none.
    pub location: Option<Location>,
}

impl ConfigError {
    /// An error about `key` without a location yet.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        let message = message.into();
        // One error per line: flatten messages from other crates (cron's
        // parser quotes the input over several lines).
        let message = if message.contains('\n') {
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        } else {
            message
        };
        ConfigError {
            key: key.into(),
            message,
            location: None,
        }
    }
}

/// `key: message`, or just the message when there is no key.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Everything wrong with one config, found at once.
///
/// Displays one error per line, each prefixed by the origin and, when
/// known, the line and column: `lamina.toml:12:1: speed.batch_interval_ms:
/// 5 is out of range (10..=60000)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.origin, .errors))]
pub struct ConfigErrors {
    /// Where the config came from: a file path or `embedded default`.
    pub origin: String,
    /// The problems, in the order they were found (never empty).
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error not tied to a key, such as an unreadable file.
    pub fn single(origin: impl Into<String>, error: ConfigError) -> Self {
        ConfigErrors {
            origin: origin.into(),
            errors: vec![error],
        }
    }

    /// The error about `key`, if there is one; handy in tests and tools.
    pub fn for_key(&self, key: &str) -> Option<&ConfigError> {
        self.errors.iter().find(|e| e.key == key)
    }
}

fn render(origin: &str, errors: &[ConfigError]) -> String {
    let mut out = String::new();
    for (i, error) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(origin);
        if let Some(Location { line, column }) = error.location {
            out.push_str(&format!(":{line}:{column}"));
        }
        out.push_str(": ");
        out.push_str(&error.to_string());
    }
    out
}

/// Collects the errors of a validation pass so that all are reported.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) errors: Vec<ConfigError>,
}

impl Report {
    /// Records that `key` is wrong.
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(key, message));
    }

    /// Records `key: value is out of range (lo..=hi)` unless `value` is in it.
    pub(super) fn range<T>(&mut self, key: &str, value: T, range: std::ops::RangeInclusive<T>)
    where
        T: PartialOrd + fmt::Display,
    {
        if !range.contains(&value) {
            self.push(
                key,
                format!(
                    "{value} is out of range ({}..={})",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// Whether anything was recorded since `mark` (a previous `len`).
    pub(super) fn grew_since(&self, mark: usize) -> bool {
        self.errors.len() > mark
    }

    /// The number of errors so far.
    pub(super) fn len(&self) -> usize {
        self.errors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_error_per_line_with_origin_and_location() {
        let mut a = ConfigError::new("speed.batch_interval_ms", "5 is out of range (10..=60000)");
        a.location = Some(Location { line: 3, column: 1 });
        let b = ConfigError::new("", "cannot read the file:\nNo such file");
        let errors = ConfigErrors {
            origin: "lamina.toml".into(),
            errors: vec![a, b],
        };
        assert_eq!(
            errors.to_string(),
            "lamina.toml:3:1: speed.batch_interval_ms: 5 is out of range (10..=60000)\n\
             lamina.toml: cannot read the file: No such file"
        );
        assert!(errors.for_key("speed.batch_interval_ms").is_some());
    }

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        let at = text.find("= 2").unwrap();
        assert_eq!(
            Location::of_offset(text, at),
            Location { line: 2, column: 4 }
        );
    }
}
