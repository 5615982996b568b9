//! Envelopes: a record together with what its source knows about it — a
//! Kafka record's topic, partition, offset, timestamp, key and headers; a
//! Flume event's headers.
//!
//! A receiver that has such metadata appends each record as one
//! [`ENVELOPED`](crate::control::ENVELOPED) log record whose payload is the
//! encoded envelope. The micro-batch loop and the sealer decode it: the
//! value is parsed by the stream's format like any record, and the metadata
//! becomes the [source columns](SOURCE_COLUMNS) of the row. Because the
//! metadata travels inside the record, it is exactly as durable as the
//! record, and a Kafka partition's next offset is known from the records
//! themselves: the micro-batch that takes them commits it
//! ([`Position::SourceOffset`](crate::commit::Position::SourceOffset)).
//!
//! # Encoding (version 1)
//!
//! ```text
//! u8 version (1) | u8 flags
//! flags & 1:  u16 source length, source (UTF-8), i32 partition, i64 offset
//! flags & 2:  i64 timestamp (ms since the Unix epoch)
//! flags & 4:  u32 key length, key
//! flags & 8:  u16 header count, per header: u16 name length, name (UTF-8),
//!             u32 value length, value
//! flags & 16: u16 reason length, reason (UTF-8): the record was refused
//!             (too long) and the value is its first bytes
//! the value: every byte left
//! ```
//!
//! All integers little-endian. A payload that does not decode (a newer
//! version, damage the log's checksums missed) becomes a dead letter of the
//! stream, never a panic.

use std::sync::Arc;

use arrow::array::RecordBatchOptions;
use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

/// The columns a stream with an enveloping receiver (`kafka`,
/// `flume_avro`) has besides its format's, all nullable, in this order:
/// `_source` (Kafka topic), `_partition`, `_offset`, `_timestamp` (the
/// record's time at the source, UTC ms), `_key` (UTF-8, invalid bytes
/// replaced), `_headers` (a JSON object of header name to value).
pub const SOURCE_COLUMNS: [&str; 6] = [
    "_source",
    "_partition",
    "_offset",
    "_timestamp",
    "_key",
    "_headers",
];

const VERSION: u8 = 1;
const HAS_POSITION: u8 = 1;
const HAS_TIMESTAMP: u8 = 2;
const HAS_KEY: u8 = 4;
const HAS_HEADERS: u8 = 8;
const IS_REJECTED: u8 = 16;

/// Where a record sits in its source: a Kafka topic's partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition<'a> {
    /// The source's name (the Kafka topic).
    pub source: &'a str,
    /// The partition.
    pub partition: i32,
    /// The record's offset in the partition.
    pub offset: i64,
}

/// One record and its metadata (borrowed: encoding copies nothing twice,
/// decoding copies nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Its position in its source, if it has one.
    pub position: Option<SourcePosition<'a>>,
    /// Its time at the source (ms since the Unix epoch).
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its headers, in the source's order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Why the record was refused (e.g. longer than `max_record_bytes`):
    /// it becomes a dead letter, its position still counts as read, and
    /// `value` holds its first bytes only.
    pub rejected: Option<&'a str>,
    /// The record itself, parsed by the stream's format.
    pub value: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Appends the encoding to `out`.
    ///
    /// # Panics
    ///
    /// Never for what receivers hand in: sources, header names and header
    /// counts over 65,535 and keys or header values over 4 GiB are cut,
    /// not encoded wrongly (receivers' size limits are far below).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.position.is_some() {
            flags |= HAS_POSITION;
        }
        if self.timestamp_ms.is_some() {
            flags |= HAS_TIMESTAMP;
        }
        if self.key.is_some() {
            flags |= HAS_KEY;
        }
        if !self.headers.is_empty() {
            flags |= HAS_HEADERS;
        }
        if self.rejected.is_some() {
            flags |= IS_REJECTED;
        }
        out.push(VERSION);
        out.push(flags);
        if let Some(p) = &self.position {
            put_short(out, p.source.as_bytes());
            out.extend_from_slice(&p.partition.to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
        }
        if let Some(t) = self.timestamp_ms {
            out.extend_from_slice(&t.to_le_bytes());
        }
        if let Some(k) = self.key {
            put_long(out, k);
        }
        if !self.headers.is_empty() {
            let n = self.headers.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            for (name, value) in &self.headers[..n] {
                put_short(out, name.as_bytes());
                put_long(out, value);
            }
        }
        if let Some(reason) = self.rejected {
            put_short(out, reason.as_bytes());
        }
        out.extend_from_slice(self.value);
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 32);
        self.encode(&mut out);
        out
    }

    /// Decodes an envelope.
    ///
    /// # Errors
    ///
    /// A one-line reason when `bytes` is not an envelope this version
    /// reads.
    pub fn decode(bytes: &'a [u8]) -> Result<Envelope<'a>, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(format!(
                "record envelope version {version} is not known to this version of lamina (it reads version {VERSION})"
            ));
        }
        let flags = r.u8()?;
        let mut e = Envelope::default();
        if flags & HAS_POSITION != 0 {
            let source = r.str_short()?;
            let partition = i32::from_le_bytes(r.array()?);
            let offset = i64::from_le_bytes(r.array()?);
            e.position = Some(SourcePosition {
                source,
                partition,
                offset,
            });
        }
        if flags & HAS_TIMESTAMP != 0 {
            e.timestamp_ms = Some(i64::from_le_bytes(r.array()?));
        }
        if flags & HAS_KEY != 0 {
            e.key = Some(r.long()?);
        }
        if flags & HAS_HEADERS != 0 {
            let n = u16::from_le_bytes(r.array()?);
            for _ in 0..n {
                let name = r.str_short()?;
                let value = r.long()?;
                e.headers.push((name, value));
            }
        }
        if flags & IS_REJECTED != 0 {
            e.rejected = Some(r.str_short()?);
        }
        e.value = &bytes[r.at..];
        Ok(e)
    }
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Cut at a char boundary: the callers pass UTF-8.
    let mut n = bytes.len().min(u16::MAX as usize);
    while n < bytes.len() && n > 0 && (bytes[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&bytes[..n]);
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len().min(u32::MAX as usize);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&bytes[..n]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "record envelope is cut short: {n} bytes wanted at byte {} of {}",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn str_short(&mut self) -> Result<&'a str, String> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| "record envelope holds a name that is not UTF-8".to_owned())
    }

    fn long(&mut self) -> Result<&'a [u8], String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
}

/// The source metadata of one micro-batch's records of a stream, one entry
/// per record (records that came without an envelope have none): what the
/// [source columns](SOURCE_COLUMNS) are built from.
#[derive(Debug, Default)]
pub struct SourceMeta {
    /// Distinct sources seen, so that a record stores an index.
    sources: Vec<String>,
    rows: Vec<MetaRow>,
    /// Keys and rendered headers of all records.
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
struct MetaRow {
    /// Index into `sources` and partition and offset.
    position: Option<(u32, i32, i64)>,
    timestamp_ms: Option<i64>,
    key: Option<(usize, usize)>,
    /// The headers as a JSON object, in `bytes`.
    headers: Option<(usize, usize)>,
}

impl SourceMeta {
    /// Forgets every record, keeping the capacity.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes.clear();
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a record that came without an envelope: nulls.
    pub fn push_none(&mut self) {
        self.rows.push(MetaRow::default());
    }

    /// Adds the metadata of `e`.
    pub fn push(&mut self, e: &Envelope<'_>) {
        let position = e.position.map(|p| {
            let index = match self.sources.iter().position(|s| s == p.source) {
                Some(i) => i,
                None => {
                    self.sources.push(p.source.to_owned());
                    self.sources.len() - 1
                }
            };
            (index as u32, p.partition, p.offset)
        });
        let key = e.key.map(|k| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(k);
            (start, self.bytes.len())
        });
        let headers = (!e.headers.is_empty()).then(|| {
            let start = self.bytes.len();
            let object: serde_json::Map<String, serde_json::Value> = e
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        (*n).to_owned(),
                        serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect();
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.bytes, &object);
            (start, self.bytes.len())
        });
        self.rows.push(MetaRow {
            position,
            timestamp_ms: e.timestamp_ms,
            key,
            headers,
        });
    }

    /// The fields of the [source columns](SOURCE_COLUMNS).
    pub fn fields() -> Vec<Field> {
        vec![
            Field::new(SOURCE_COLUMNS[0], DataType::Utf8, true),
            Field::new(SOURCE_COLUMNS[1], DataType::Int64, true),
            Field::new(SOURCE_COLUMNS[2], DataType::Int64, true),
            Field::new(
                SOURCE_COLUMNS[3],
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new(SOURCE_COLUMNS[4], DataType::Utf8, true),
            Field::new(SOURCE_COLUMNS[5], DataType::Utf8, true),
        ]
    }

    /// The source columns of records `rows` (indices into this batch's
    /// records, e.g. the parser's accepted ones), in the order of
    /// [`fields`](Self::fields).
    pub fn columns(&self, rows: impl ExactSizeIterator<Item = usize>) -> Vec<ArrayRef> {
        let n = rows.len();
        let mut source = StringBuilder::with_capacity(n, n * 8);
        let mut partition = Int64Builder::with_capacity(n);
        let mut offset = Int64Builder::with_capacity(n);
        let mut timestamp = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut key = StringBuilder::with_capacity(n, n * 8);
        let mut headers = StringBuilder::new();
        for i in rows {
            let row = self.rows.get(i).copied().unwrap_or_default();
            match row.position {
                Some((s, p, o)) => {
                    source.append_value(&self.sources[s as usize]);
                    partition.append_value(i64::from(p));
                    offset.append_value(o);
                }
                None => {
                    source.append_null();
                    partition.append_null();
                    offset.append_null();
                }
            }
            timestamp.append_option(row.timestamp_ms);
            match row.key {
                Some((a, b)) => key.append_value(String::from_utf8_lossy(&self.bytes[a..b])),
                None => key.append_null(),
            }
            match row.headers {
                // Rendered by serde_json: valid UTF-8.
                Some((a, b)) => headers.append_value(String::from_utf8_lossy(&self.bytes[a..b])),
                None => headers.append_null(),
            }
        }
        vec![
            Arc::new(source.finish()),
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            Arc::new(timestamp.finish()),
            Arc::new(key.finish()),
            Arc::new(headers.finish()),
        ]
    }
}

/// `batch` with the [source columns](SOURCE_COLUMNS) appended: row `r`
/// came from record `rows[r]` of `meta`'s batch.
///
/// # Errors
///
/// [`lamina::Error::Internal`] when the columns cannot be added (a
/// stream's own column of the same name; the config refuses those).
pub fn with_source_columns(
    batch: &RecordBatch,
    meta: &SourceMeta,
    rows: impl ExactSizeIterator<Item = usize>,
) -> Result<RecordBatch, lamina::Error> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(SourceMeta::fields());
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.extend(meta.columns(rows));
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)
        .map_err(|e| lamina::Error::Internal(format!("adding the source columns: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    fn kafka(value: &'static [u8]) -> Envelope<'static> {
        Envelope {
            position: Some(SourcePosition {
                source: "events",
                partition: 2,
                offset: 41,
            }),
            timestamp_ms: Some(1_764_000_000_123),
            key: Some(b"user-1"),
            headers: vec![("trace", b"t-9"), ("h\u{e9}", b"\xff")],
            rejected: None,
            value,
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let all = [
            kafka(br#"{"a":1}"#),
            kafka(b""),
            Envelope {
                value: b"just a value",
                ..Envelope::default()
            },
            Envelope {
                headers: vec![("host", b"h1")],
                value: b"flume body",
                ..Envelope::default()
            },
            Envelope {
                rejected: Some("record of 9000000 bytes exceeds max_record_bytes (1048576)"),
                ..kafka(b"{\"a\": [1, 2")
            },
        ];
        for e in all {
            let bytes = e.to_bytes();
            assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn damaged_envelopes_are_errors_not_panics() {
        let bytes = kafka(b"value").to_bytes();
        // Every cut short enough to lose a field is an error; none panics.
        for n in 0..bytes.len() {
            let _ = Envelope::decode(&bytes[..n]);
        }
        assert!(Envelope::decode(&bytes[..10]).is_err());
        assert!(Envelope::decode(&[]).unwrap_err().contains("cut short"));
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(Envelope::decode(&v2).unwrap_err().contains("version 2"));
        // A length that points past the end.
        let mut long = bytes;
        long[2] = 0xff;
        long[3] = 0xff;
        assert!(Envelope::decode(&long).is_err());
    }

    #[test]
    fn columns_hold_the_metadata_and_nulls_for_plain_records() {
        let mut meta = SourceMeta::default();
        meta.push(&kafka(b"x"));
        meta.push_none();
        meta.push(&Envelope {
            headers: vec![("host", b"h1")],
            value: b"y",
            ..Envelope::default()
        });
        assert_eq!(meta.len(), 3);
        let cols = meta.columns([0usize, 1, 2].into_iter());
        assert_eq!(cols.len(), SourceMeta::fields().len());
        let source = cols[0].as_string::<i32>();
        assert_eq!(source.value(0), "events");
        assert!(source.is_null(1) && source.is_null(2));
        assert_eq!(cols[1].as_primitive::<Int64Type>().value(0), 2);
        assert_eq!(cols[2].as_primitive::<Int64Type>().value(0), 41);
        assert_eq!(
            cols[3].as_primitive::<TimestampMillisecondType>().value(0),
            1_764_000_000_123
        );
        assert_eq!(cols[4].as_string::<i32>().value(0), "user-1");
        let headers = cols[5].as_string::<i32>();
        // Names in order, values as text (invalid UTF-8 replaced).
        assert_eq!(headers.value(0), r#"{"hé":"�","trace":"t-9"}"#);
        assert_eq!(headers.value(2), r#"{"host":"h1"}"#);
        assert!(headers.is_null(1));
        // A subset of rows, e.g. the ones that parsed.
        let cols = meta.columns([2usize].into_iter());
        assert_eq!(cols[5].as_string::<i32>().value(0), r#"{"host":"h1"}"#);
        meta.clear();
        assert!(meta.is_empty());
    }
}
