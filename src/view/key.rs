//! Key extractors: which key (or keys) a record contributes to.
//!
//! Keys are text. A column's value, each word of a text column, the start of
//! the event-time bucket of a timestamp column, or a tuple of these joined by
//! `|`. A record can yield several keys (one per word); a record whose key
//! column is null yields none.

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::columnar::{KeyColumn, TextColumn, TimestampColumn};
use crate::error::{Error, Result};

/// How a view's keys are extracted from a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySpec {
    /// The value of a column (text, number or boolean), as text.
    Column(String),
    /// Each whitespace-separated word of a text column; a record with `n`
    /// words contributes to `n` keys (repeats count again).
    Words(String),
    /// The start of the fixed-width event-time bucket a timestamp falls in,
    /// as RFC 3339 UTC (`2026-11-25T14:00:00Z`).
    TimeBucket {
        /// A timestamp column, or an Int64 column of epoch milliseconds.
        column: String,
        /// Bucket width in seconds (at least 1).
        width_secs: u64,
    },
    /// Several parts joined by `|`. A `|` or `\` inside a part is escaped
    /// with a backslash so that tuple keys stay unambiguous; a word part
    /// yields one key per word.
    Tuple(Vec<KeySpec>),
}

impl KeySpec {
    /// Checks the spec without data: widths, empty tuples, empty names.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        match self {
            KeySpec::Column(c) | KeySpec::Words(c) if c.is_empty() => {
                Err(Error::plan("key: column name is empty"))
            }
            KeySpec::TimeBucket {
                width_secs: 0,
                column,
            } => Err(Error::plan(format!(
                "key: time bucket of `{column}` must be at least 1 second wide"
            ))),
            KeySpec::TimeBucket { column, .. } if column.is_empty() => {
                Err(Error::plan("key: column name is empty"))
            }
            KeySpec::Tuple(parts) if parts.is_empty() => {
                Err(Error::plan("key: a tuple needs at least one part"))
            }
            KeySpec::Tuple(parts) if parts.iter().any(|p| matches!(p, KeySpec::Tuple(_))) => {
                Err(Error::plan("key: tuples cannot be nested"))
            }
            KeySpec::Tuple(parts) => parts.iter().try_for_each(KeySpec::validate),
            _ => Ok(()),
        }
    }

    /// Binds the spec to the columns of one batch. Column lookups and type
    /// checks happen here, once per batch, not per row.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming a missing column or one of the wrong type.
    pub fn bind<'a>(&self, batch: &'a RecordBatch) -> Result<BoundKey<'a>> {
        Ok(match self {
            KeySpec::Column(c) => BoundKey::Column(KeyColumn::of(batch, c)?),
            KeySpec::Words(c) => BoundKey::Words(TextColumn::of(batch, c)?),
            KeySpec::TimeBucket { column, width_secs } => BoundKey::Bucket {
                column: TimestampColumn::of(batch, column)?,
                width_micros: i64::try_from(*width_secs)
                    .ok()
                    .and_then(|w| w.checked_mul(1_000_000))
                    .filter(|w| *w > 0)
                    .ok_or_else(|| {
                        Error::plan(format!(
                            "key: bucket width {width_secs}s of `{column}` is out of range"
                        ))
                    })?,
            },
            KeySpec::Tuple(parts) => {
                BoundKey::Tuple(parts.iter().map(|p| p.bind(batch)).collect::<Result<_>>()?)
            }
        })
    }
}

/// A [`KeySpec`] bound to one batch's columns.
#[derive(Debug)]
pub enum BoundKey<'a> {
    /// See [`KeySpec::Column`].
    Column(KeyColumn<'a>),
    /// See [`KeySpec::Words`].
    Words(TextColumn<'a>),
    /// See [`KeySpec::TimeBucket`].
    Bucket {
        /// The timestamp column.
        column: TimestampColumn<'a>,
        /// Bucket width.
        width_micros: i64,
    },
    /// See [`KeySpec::Tuple`].
    Tuple(Vec<BoundKey<'a>>),
}

impl BoundKey<'_> {
    /// Calls `emit` with every key of `row`. `scratch` is a reusable buffer
    /// for tuple keys; other keys are borrowed straight from the column or
    /// formatted on the stack, so extraction allocates nothing per record.
    #[inline]
    pub fn for_each_key(&self, row: usize, scratch: &mut String, mut emit: impl FnMut(&str)) {
        match self {
            BoundKey::Tuple(parts) => {
                scratch.clear();
                emit_tuple(parts, row, scratch, &mut emit);
            }
            single => single.for_each_part(row, emit),
        }
    }

    /// Calls `f` with each value of a non-tuple part: once for a column or
    /// bucket, once per word for words, never for null.
    #[inline]
    fn for_each_part(&self, row: usize, mut f: impl FnMut(&str)) {
        match self {
            BoundKey::Words(text) => {
                if let Some(line) = text.get(row) {
                    for_each_word(line, f);
                }
            }
            BoundKey::Column(KeyColumn::Text(text)) => {
                if let Some(value) = text.get(row) {
                    f(value);
                }
            }
            BoundKey::Column(KeyColumn::Dict(dict)) => {
                if let Some(value) = dict.get(row) {
                    f(value);
                }
            }
            BoundKey::Column(column) => {
                let mut buf = StackStr::new();
                if column.write(row, &mut buf) {
                    f(buf.as_str());
                }
            }
            BoundKey::Bucket {
                column,
                width_micros,
            } => {
                if let Some(t) = column.micros(row) {
                    let mut buf = StackStr::new();
                    write_rfc3339(t - t.rem_euclid(*width_micros), &mut buf);
                    f(buf.as_str());
                }
            }
            // `validate` rejects nested tuples.
            BoundKey::Tuple(_) => {}
        }
    }
}

/// Emits every combination of the tuple's parts for `row`, each appended
/// (escaped) to `prefix`.
fn emit_tuple(parts: &[BoundKey<'_>], row: usize, prefix: &mut String, emit: &mut dyn FnMut(&str)) {
    let Some((first, rest)) = parts.split_first() else {
        emit(prefix);
        return;
    };
    let start = prefix.len();
    first.for_each_part(row, |part: &str| {
        prefix.truncate(start);
        if start > 0 {
            prefix.push('|');
        }
        for c in part.chars() {
            if c == '|' || c == '\\' {
                prefix.push('\\');
            }
            prefix.push(c);
        }
        emit_tuple(rest, row, prefix, emit);
    });
    prefix.truncate(start);
}

/// A small string on the stack for formatting one number or timestamp
/// without touching the heap. Long enough for any `f64` in Rust's
/// non-exponent notation; longer output is cut (cannot happen for numbers).
struct StackStr {
    buf: [u8; 512],
    len: usize,
}

impl StackStr {
    fn new() -> Self {
        StackStr {
            buf: [0; 512],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes microseconds since the epoch as RFC 3339 UTC, with seconds
/// precision (`1970-01-01T00:00:00Z`).
pub fn write_rfc3339(micros: i64, out: &mut impl std::fmt::Write) {
    let secs = micros.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
    .unwrap_or_default();
}

/// The proleptic Gregorian date of a day count since 1970-01-01, by the
/// era-based method: shift to years starting in March so that the leap day
/// is the last day of the year, split into 400-year eras of 146097 days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Calls `f` with each word of `line`, exactly as `str::split_whitespace`
/// splits it (Unicode `White_Space`), with a word-at-a-time scan for ASCII
/// lines: in the ASCII range `White_Space` is U+0009..=U+000D and U+0020.
///
/// A byte loop that branches on every byte mispredicts at every word's
/// end; here the whitespace of 64 bytes becomes one bitmask (eight bytes
/// per step, see [`space_bits`]) and each word is two trailing-zero counts.
#[inline]
pub(crate) fn for_each_word<'a>(line: &'a str, mut f: impl FnMut(&'a str)) {
    if !line.is_ascii() {
        line.split_whitespace().for_each(f);
        return;
    }
    let bytes = line.as_bytes();
    // Start of a word that runs on into the next chunk.
    let mut open: Option<usize> = None;
    for (c, chunk) in bytes.chunks(64).enumerate() {
        let base = c * 64;
        // Bits past the line's end count as whitespace: they end its
        // last word.
        let spaces = space_mask(chunk);
        let mut from = 0u32;
        loop {
            let start = match open {
                Some(start) => start,
                None => {
                    let words = !spaces & (u64::MAX << from);
                    if words == 0 {
                        break;
                    }
                    let at = words.trailing_zeros();
                    from = at;
                    base + at as usize
                }
            };
            let ends = spaces & (u64::MAX << from);
            if ends == 0 {
                open = Some(start);
                break;
            }
            let end = ends.trailing_zeros();
            f(&line[start..base + end as usize]);
            open = None;
            from = end;
        }
    }
    if let Some(start) = open {
        f(&line[start..]);
    }
}

/// Bit `i` set where `chunk[i]` (ASCII, at most 64 bytes) is whitespace,
/// and every bit past the chunk's end.
#[inline]
fn space_mask(chunk: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut words = chunk.chunks_exact(8);
    for (i, w) in words.by_ref().enumerate() {
        let w = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
        mask |= space_bits(w) << (i * 8);
    }
    let rest = words.remainder();
    let done = chunk.len() - rest.len();
    if done < 64 {
        let mut last = [b' '; 8];
        last[..rest.len()].copy_from_slice(rest);
        mask |= space_bits(u64::from_le_bytes(last)) << done;
        if done + 8 < 64 {
            mask |= u64::MAX << (done + 8);
        }
    }
    mask
}

/// One bit per byte of `w` (eight ASCII bytes, the first in the low bits):
/// set where the byte is a space or one of U+0009..=U+000D.
#[inline]
fn space_bits(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte equal to 0x20: zero after the xor; `(t & 0x7f) + 0x7f` sets
    // the high bit of every non-zero byte without carrying into the next.
    let t = w ^ (ONES * 0x20);
    let space = !(((t & !HIGH).wrapping_add(ONES * 0x7f)) | t) & HIGH;
    // ASCII bytes are below 0x80, so adding 0x77 or 0x72 carries out of no
    // byte: the first sum's high bit says `b >= 9`, the second's `b >= 14`.
    let control = w.wrapping_add(ONES * 0x77) & !w.wrapping_add(ONES * 0x72) & HIGH;
    // Gather the eight high bits into the low byte.
    (((space | control) >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

#[cfg(test)]
mod word_tests {
    use proptest::prelude::*;

    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        super::for_each_word(line, |w| out.push(w.to_owned()));
        out
    }

    /// What `split_whitespace` makes of `line`.
    fn std_words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    proptest! {
        #[test]
        fn splits_like_split_whitespace(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(" ".to_owned()), Just("\t".to_owned()), Just("\n".to_owned()),
                    Just("\u{b}".to_owned()), Just("\u{c}".to_owned()), Just("\r".to_owned()),
                    Just("\u{1c}".to_owned()), Just("\u{a0}".to_owned()), Just("\u{3000}".to_owned()),
                    "[a-z]{1,6}", "[äöü€]{1,2}",
                ],
                0..20,
            )
        ) {
            let line: String = parts.concat();
            prop_assert_eq!(words(&line), std_words(&line));
        }

        /// ASCII lines of any length, words running over the 64-byte
        /// chunks, every ASCII byte (control characters that are not
        /// whitespace among them).
        #[test]
        fn splits_ascii_like_split_whitespace(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(" ".to_owned()), Just("  ".to_owned()), Just("\t".to_owned()),
                    Just("\n".to_owned()), Just("\u{b}".to_owned()), Just("\u{c}".to_owned()),
                    Just("\r".to_owned()), Just("\u{8}".to_owned()), Just("\u{e}".to_owned()),
                    Just("\u{1f}".to_owned()), Just("\u{7f}".to_owned()), Just("!".to_owned()),
                    "[a-z]{1,9}", "[a-zA-Z0-9]{60,70}", "[\\x00-\\x7f]{0,12}",
                ],
                0..40,
            )
        ) {
            let line: String = parts.concat();
            prop_assert_eq!(words(&line), std_words(&line));
        }
    }

    /// Each ASCII byte, alone and between words, at every position of an
    /// eight-byte word and of a 64-byte chunk.
    #[test]
    fn every_ascii_byte_at_every_position() {
        for b in 0u8..0x80 {
            for at in 0..70 {
                let mut line = vec![b'x'; 70];
                line[at] = b;
                let line = String::from_utf8(line).unwrap();
                assert_eq!(words(&line), std_words(&line), "byte {b:#x} at {at}");
                let alone = &line[at..=at];
                assert_eq!(words(alone), std_words(alone), "byte {b:#x} alone");
            }
        }
    }
}
