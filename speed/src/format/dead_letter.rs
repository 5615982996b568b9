//! Records that did not parse, kept aside with the reason.

use std::fmt;

/// The most bytes of a rejected record a [`DeadLetter`] keeps. Enough to see
/// what was wrong; a micro-batch of garbage cannot balloon the dead-letter
/// store.
pub const MAX_DEAD_LETTER_BYTES: usize = 4096;

/// At most this many characters of a value are quoted in a reason.
const MAX_SHOWN_CHARS: usize = 64;

/// A record that did not parse. It contributes nothing to the batch; the
/// other records of the micro-batch are unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Position of the record in the input handed to the parser.
    pub index: usize,
    /// Why it was rejected: one line that names the field or column and
    /// what was wrong, e.g. `field "amount": expected int64, got string "12a"`.
    pub reason: String,
    /// The record's first [`MAX_DEAD_LETTER_BYTES`] bytes.
    pub record: Vec<u8>,
    /// The record's full length in bytes; more than `record.len()` when it
    /// was truncated.
    pub record_len: usize,
}

impl DeadLetter {
    /// A dead letter for `record` at `index`, keeping a truncated copy.
    pub fn new(index: usize, reason: String, record: &[u8]) -> Self {
        DeadLetter {
            index,
            reason,
            record: record[..record.len().min(MAX_DEAD_LETTER_BYTES)].to_vec(),
            record_len: record.len(),
        }
    }

    /// Whether `record` holds less than the whole record.
    pub fn is_truncated(&self) -> bool {
        self.record.len() < self.record_len
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.index, self.reason)
    }
}

/// A value quoted for a reason: escaped like a Rust string literal (so the
/// reason stays on one line, whatever the value holds) and cut after
/// [`MAX_SHOWN_CHARS`] characters.
pub(super) struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Where a record stops being UTF-8, as a reason.
pub(super) fn not_utf8(err: std::str::Utf8Error) -> String {
    format!("not valid UTF-8 at byte {}", err.valid_up_to())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_max_bytes() {
        let long = vec![b'x'; MAX_DEAD_LETTER_BYTES + 10];
        let d = DeadLetter::new(7, "r".into(), &long);
        assert_eq!(d.record.len(), MAX_DEAD_LETTER_BYTES);
        assert_eq!(d.record_len, MAX_DEAD_LETTER_BYTES + 10);
        assert!(d.is_truncated());
        assert_eq!(d.to_string(), "record 7: r");
        let short = DeadLetter::new(0, "r".into(), b"abc");
        assert_eq!(short.record, b"abc");
        assert!(!short.is_truncated());
    }

    #[test]
    fn shown_values_stay_on_one_line_and_short() {
        assert_eq!(Shown("12a").to_string(), "\"12a\"");
        assert_eq!(Shown("a\nb\"c").to_string(), "\"a\\nb\\\"c\"");
        let long = "é".repeat(100);
        let shown = Shown(&long).to_string();
        assert_eq!(shown, format!("{:?}… (200 bytes)", "é".repeat(64)));
    }
}
