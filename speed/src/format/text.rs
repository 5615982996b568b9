//! Format `text`: each record is one value of the column `line`.
//!
//! - The record must be valid UTF-8; otherwise it is dead-lettered with
//!   `not valid UTF-8 at byte N`, N being where the first invalid sequence
//!   starts.
//! - One trailing `\r` is stripped, so CRLF input reads like LF input.
//! - An empty record (an empty line, or a lone `\r`) is kept as the empty
//!   string. Parsing does not decide what a blank line means; a view that
//!   splits lines into words simply finds none in it.
//!
//! Values are copied straight from the record into the column's buffer:
//! nothing is allocated per record.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::columns::MAX_STRING_BYTES;
use super::dead_letter::not_utf8;

/// The name of the text format's only column.
pub const LINE_COLUMN: &str = "line";

/// `line: Utf8`, not nullable.
pub(super) fn arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        LINE_COLUMN,
        DataType::Utf8,
        false,
    )]))
}

/// Builds the `line` column of a micro-batch.
#[derive(Debug)]
pub(super) struct TextParser {
    lines: StringBuilder,
    bytes: usize,
    max_bytes: usize,
}

impl TextParser {
    pub fn new() -> Self {
        TextParser {
            lines: StringBuilder::new(),
            bytes: 0,
            max_bytes: MAX_STRING_BYTES,
        }
    }

    /// Appends `record`, or returns why it cannot be a line.
    pub fn push(&mut self, record: &[u8]) -> Result<(), String> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        let line = std::str::from_utf8(record).map_err(not_utf8)?;
        if self.bytes.saturating_add(line.len()) > self.max_bytes {
            return Err(format!(
                "the micro-batch's text would exceed {} bytes",
                self.max_bytes
            ));
        }
        self.bytes += line.len();
        self.lines.append_value(line);
        Ok(())
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.bytes = 0;
        vec![Arc::new(self.lines.finish())]
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;
    use proptest::prelude::*;

    use super::super::{DeadLetter, Format};
    use super::*;

    #[test]
    fn lines_become_the_line_column() {
        let parsed = Format::Text.parse([
            &b"to be or"[..],
            b"not to be\r",
            b"",
            b"\r",
            b"caf\xc3\xa9 \xe2\x9c\x93",
            b"two\r\r",
        ]);
        let want = StringArray::from(vec!["to be or", "not to be", "", "", "café ✓", "two\r"]);
        assert_eq!(
            parsed.batch.column(0).as_ref(),
            &want as &dyn arrow::array::Array
        );
        assert_eq!(parsed.batch.schema(), arrow_schema());
        assert!(parsed.dead_letters.is_empty());
        assert_eq!(parsed.accepted, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn invalid_utf8_is_dead_lettered_with_its_position() {
        let parsed =
            Format::Text.parse([&b"ok"[..], b"ab\xffcd", b"\xc3", b"fine", b"\xed\xa0\x80"]);
        let want = StringArray::from(vec!["ok", "fine"]);
        assert_eq!(
            parsed.batch.column(0).as_ref(),
            &want as &dyn arrow::array::Array
        );
        assert_eq!(parsed.accepted, [0, 3]);
        assert_eq!(
            parsed.dead_letters,
            [
                DeadLetter::new(1, "not valid UTF-8 at byte 2".into(), b"ab\xffcd"),
                DeadLetter::new(2, "not valid UTF-8 at byte 0".into(), b"\xc3"),
                // An encoded UTF-16 surrogate is not UTF-8.
                DeadLetter::new(4, "not valid UTF-8 at byte 0".into(), b"\xed\xa0\x80"),
            ]
        );
    }

    #[test]
    fn text_limit_dead_letters_instead_of_overflowing() {
        let mut parser = TextParser::new();
        parser.max_bytes = 4;
        assert!(parser.push(b"abc").is_ok());
        assert_eq!(
            parser.push(b"de").unwrap_err(),
            "the micro-batch's text would exceed 4 bytes"
        );
        assert!(parser.push(b"d").is_ok());
        assert_eq!(parser.finish()[0].len(), 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Oracle: a record is accepted exactly when it is UTF-8, and the
        /// column holds the accepted records minus one trailing `\r`.
        #[test]
        fn matches_a_plain_oracle(
            records in proptest::collection::vec(
                prop_oneof![
                    "[a-z \r\u{e9}\u{1F600}]{0,12}".prop_map(String::into_bytes),
                    proptest::collection::vec(any::<u8>(), 0..12),
                ],
                0..24,
            )
        ) {
            let parsed = Format::Text.parse(&records);
            let mut want = Vec::new();
            let mut accepted = Vec::new();
            let mut rejected = Vec::new();
            for (i, r) in records.iter().enumerate() {
                let r = r.strip_suffix(b"\r").unwrap_or(r);
                match std::str::from_utf8(r) {
                    Ok(s) => { want.push(s); accepted.push(i); }
                    Err(_) => rejected.push(i),
                }
            }
            let want = StringArray::from(want);
            prop_assert_eq!(parsed.batch.column(0).as_ref(), &want as &dyn arrow::array::Array);
            prop_assert_eq!(parsed.accepted, accepted);
            let dead: Vec<usize> = parsed.dead_letters.iter().map(|d| d.index).collect();
            prop_assert_eq!(dead, rejected);
        }
    }
}
