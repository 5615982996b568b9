//! Arrow record batches as dataset elements.
//!
//! A view runs over an `Rdd<RecordBatch>` whether the batches were decoded
//! from Parquet or built from a micro-batch. This module gives cheap typed
//! access to a batch's columns by name — resolved once per batch, then read
//! per row without allocation — and a [`PartitionSource`] over batches held
//! in memory.

use std::borrow::Cow;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, LargeStringArray, PrimitiveArray,
    StringArray, StringViewArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use crate::context::{Context, TaskContext};
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, PartitionSource, Rdd};
use crate::view::Num;

/// Looks up a column by name, with an error that names the column and lists
/// the ones that exist.
pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let have: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        Error::plan(format!(
            "no column `{name}` in the record batch (columns: {})",
            have.join(", ")
        ))
    })
}

fn wrong_type(name: &str, want: &str, got: &DataType) -> Error {
    Error::plan(format!("column `{name}` has type {got}; expected {want}"))
}

/// A text column of any of Arrow's string layouts.
#[derive(Debug, Clone, Copy)]
pub enum TextColumn<'a> {
    /// `Utf8`: 32-bit offsets.
    Utf8(&'a StringArray),
    /// `LargeUtf8`: 64-bit offsets.
    LargeUtf8(&'a LargeStringArray),
    /// `Utf8View`: inline short strings and views into buffers.
    Utf8View(&'a StringViewArray),
}

impl<'a> TextColumn<'a> {
    /// Resolves column `name` of `batch` as text.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the column if it is missing or not a string.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let array = column(batch, name)?;
        Ok(match array.data_type() {
            DataType::Utf8 => TextColumn::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => TextColumn::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => TextColumn::Utf8View(array.as_string_view()),
            other => return Err(wrong_type(name, "a string", other)),
        })
    }

    /// The value at `row`; `None` when null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            TextColumn::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            TextColumn::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            TextColumn::Utf8View(a) => a.is_valid(row).then(|| a.value(row)),
        }
    }
}

/// A numeric column read as [`Num`]: integers stay exact, floats are `f64`.
///
/// The array is downcast once, when the column is bound; reading a row is a
/// branch on the type and an indexed load.
#[derive(Debug, Clone, Copy)]
pub enum NumericColumn<'a> {
    /// `Int8`.
    I8(&'a PrimitiveArray<Int8Type>),
    /// `Int16`.
    I16(&'a PrimitiveArray<Int16Type>),
    /// `Int32`.
    I32(&'a PrimitiveArray<Int32Type>),
    /// `Int64`.
    I64(&'a PrimitiveArray<Int64Type>),
    /// `UInt8`.
    U8(&'a PrimitiveArray<UInt8Type>),
    /// `UInt16`.
    U16(&'a PrimitiveArray<UInt16Type>),
    /// `UInt32`.
    U32(&'a PrimitiveArray<UInt32Type>),
    /// `UInt64`.
    U64(&'a PrimitiveArray<UInt64Type>),
    /// `Float32`.
    F32(&'a PrimitiveArray<Float32Type>),
    /// `Float64`.
    F64(&'a PrimitiveArray<Float64Type>),
}

impl<'a> NumericColumn<'a> {
    /// Resolves column `name` of `batch` as a number.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the column if it is missing or not numeric.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let a = column(batch, name)?;
        Ok(match a.data_type() {
            DataType::Int8 => NumericColumn::I8(a.as_primitive()),
            DataType::Int16 => NumericColumn::I16(a.as_primitive()),
            DataType::Int32 => NumericColumn::I32(a.as_primitive()),
            DataType::Int64 => NumericColumn::I64(a.as_primitive()),
            DataType::UInt8 => NumericColumn::U8(a.as_primitive()),
            DataType::UInt16 => NumericColumn::U16(a.as_primitive()),
            DataType::UInt32 => NumericColumn::U32(a.as_primitive()),
            DataType::UInt64 => NumericColumn::U64(a.as_primitive()),
            DataType::Float32 => NumericColumn::F32(a.as_primitive()),
            DataType::Float64 => NumericColumn::F64(a.as_primitive()),
            other => return Err(wrong_type(name, "a number", other)),
        })
    }

    /// Whether values are integers (read as [`Num::Int`], except `UInt64`
    /// values above `i64::MAX`).
    pub fn is_integer(&self) -> bool {
        !matches!(self, NumericColumn::F32(_) | NumericColumn::F64(_))
    }

    /// Whether every value converts to `i64` exactly: signed integers and
    /// unsigned ones up to 32 bits (see [`get_i64`](Self::get_i64)).
    pub fn fits_i64(&self) -> bool {
        self.is_integer() && !matches!(self, NumericColumn::U64(_))
    }

    /// The column as `i64` values, if every value [fits](Self::fits_i64):
    /// borrowed for `Int64`, widened once for narrower integers. Reading a
    /// row is then an index and a null check, with no dispatch on the type.
    pub fn to_i64(&self) -> Option<I64Values<'a>> {
        fn widen<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>) -> I64Values<'_>
        where
            T::Native: Into<i64>,
        {
            I64Values {
                values: Cow::Owned(a.values().iter().map(|&v| v.into()).collect()),
                nulls: a.nulls(),
            }
        }
        Some(match *self {
            NumericColumn::I64(a) => I64Values {
                values: Cow::Borrowed(a.values()),
                nulls: a.nulls(),
            },
            NumericColumn::I8(a) => widen(a),
            NumericColumn::I16(a) => widen(a),
            NumericColumn::I32(a) => widen(a),
            NumericColumn::U8(a) => widen(a),
            NumericColumn::U16(a) => widen(a),
            NumericColumn::U32(a) => widen(a),
            NumericColumn::U64(_) | NumericColumn::F32(_) | NumericColumn::F64(_) => return None,
        })
    }

    /// The value at `row`; `None` when null. A `UInt64` above `i64::MAX` is
    /// read as a float.
    #[inline]
    pub fn get(&self, row: usize) -> Option<Num> {
        fn at<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, row: usize) -> Option<T::Native> {
            a.is_valid(row).then(|| a.value(row))
        }
        Some(match self {
            NumericColumn::I8(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::I16(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::I32(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::I64(a) => Num::Int(at(a, row)?),
            NumericColumn::U8(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::U16(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::U32(a) => Num::Int(i64::from(at(a, row)?)),
            NumericColumn::U64(a) => {
                let v = at(a, row)?;
                i64::try_from(v).map_or(Num::Float(v as f64), Num::Int)
            }
            NumericColumn::F32(a) => Num::Float(f64::from(at(a, row)?)),
            NumericColumn::F64(a) => Num::Float(at(a, row)?),
        })
    }
}

/// An integer column as `i64` values; see [`NumericColumn::to_i64`].
#[derive(Debug, Clone)]
pub struct I64Values<'a> {
    values: Cow<'a, [i64]>,
    nulls: Option<&'a NullBuffer>,
}

impl I64Values<'_> {
    /// The value at `row`; `None` when null.
    #[inline]
    pub fn get(&self, row: usize) -> Option<i64> {
        match self.nulls {
            Some(n) if n.is_null(row) => None,
            _ => Some(self.values[row]),
        }
    }
}

/// A timestamp column read as microseconds since the Unix epoch (UTC).
///
/// Accepts Arrow `Timestamp` columns of any unit and `Int64` columns, which
/// are taken as milliseconds since the epoch (what JSON producers usually
/// send).
#[derive(Debug, Clone)]
pub struct TimestampColumn<'a> {
    array: &'a ArrayRef,
    values: &'a [i64],
    micros_per_unit: (i64, i64),
}

impl<'a> TimestampColumn<'a> {
    /// Resolves column `name` of `batch` as a timestamp.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the column if it is missing or of another type.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let array = column(batch, name)?;
        // (multiply, divide) turning one unit into microseconds.
        let (values, micros_per_unit): (&[i64], _) = match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => (
                array.as_primitive::<TimestampSecondType>().values(),
                (1_000_000, 1),
            ),
            DataType::Timestamp(TimeUnit::Millisecond, _) => (
                array.as_primitive::<TimestampMillisecondType>().values(),
                (1_000, 1),
            ),
            DataType::Int64 => (array.as_primitive::<Int64Type>().values(), (1_000, 1)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => (
                array.as_primitive::<TimestampMicrosecondType>().values(),
                (1, 1),
            ),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => (
                array.as_primitive::<TimestampNanosecondType>().values(),
                (1, 1_000),
            ),
            other => {
                return Err(wrong_type(
                    name,
                    "a timestamp or Int64 epoch milliseconds",
                    other,
                ));
            }
        };
        Ok(TimestampColumn {
            array,
            values,
            micros_per_unit,
        })
    }

    /// Microseconds since the epoch at `row`; `None` when null.
    #[inline]
    pub fn micros(&self, row: usize) -> Option<i64> {
        if self.array.is_null(row) {
            return None;
        }
        let raw = self.values[row];
        let (mul, div) = self.micros_per_unit;
        Some(raw.saturating_mul(mul).div_euclid(div))
    }
}

/// A dictionary-encoded string column (`Dictionary(Int32, Utf8)`): each
/// row an index into the dictionary's values. The Parquet reader hands the
/// batches of one column chunk the same dictionary array, so a fold can
/// keep per-index state across them (see [`values`](Self::values)).
#[derive(Debug, Clone)]
pub struct DictColumn<'a> {
    keys: &'a PrimitiveArray<Int32Type>,
    values: &'a ArrayRef,
    strings: &'a StringArray,
}

impl<'a> DictColumn<'a> {
    /// The dictionary's index at `row`; `None` when the row is null (or its
    /// value is).
    #[inline]
    pub fn index(&self, row: usize) -> Option<usize> {
        if self.keys.is_null(row) {
            return None;
        }
        let i = usize::try_from(self.keys.value(row)).ok()?;
        (i < self.strings.len() && self.strings.is_valid(i)).then_some(i)
    }

    /// The value at `row`.
    #[inline]
    pub fn get(&self, row: usize) -> Option<&'a str> {
        self.index(row).map(|i| self.strings.value(i))
    }

    /// The dictionary: the same `Arc` for every batch that shares it.
    pub fn values(&self) -> &'a ArrayRef {
        self.values
    }

    /// The dictionary's strings.
    pub fn strings(&self) -> &'a StringArray {
        self.strings
    }
}

/// Any column whose values can serve as a key, written as text.
#[derive(Debug, Clone)]
pub enum KeyColumn<'a> {
    /// A string column: the value itself.
    Text(TextColumn<'a>),
    /// A dictionary-encoded string column: the value itself.
    Dict(DictColumn<'a>),
    /// A numeric column: decimal text (`42`, `2.5`).
    Number(NumericColumn<'a>),
    /// A boolean column: `true` or `false`.
    Bool(&'a BooleanArray),
}

impl<'a> KeyColumn<'a> {
    /// Resolves column `name` of `batch` as a key.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the column if it is missing or of a type that
    /// cannot be a key.
    pub fn of(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let array = column(batch, name)?;
        match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(KeyColumn::Text(TextColumn::of(batch, name)?))
            }
            DataType::Boolean => Ok(KeyColumn::Bool(array.as_boolean())),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let dict = array.as_dictionary::<Int32Type>();
                Ok(KeyColumn::Dict(DictColumn {
                    keys: dict.keys(),
                    values: dict.values(),
                    strings: dict.values().as_string::<i32>(),
                }))
            }
            _ => NumericColumn::of(batch, name)
                .map(KeyColumn::Number)
                .map_err(|_| wrong_type(name, "a string, number or boolean", array.data_type())),
        }
    }

    /// Appends the value at `row` to `out`; false (nothing appended) when
    /// null.
    #[inline]
    pub fn write(&self, row: usize, out: &mut impl std::fmt::Write) -> bool {
        // A writer that runs out of room truncates the key; the callers'
        // buffers are sized for any number, so the result is ignored.
        match self {
            KeyColumn::Text(t) => t.get(row).map(|s| out.write_str(s)).is_some(),
            KeyColumn::Dict(d) => d.get(row).map(|s| out.write_str(s)).is_some(),
            KeyColumn::Number(n) => n
                .get(row)
                .map(|v| match v {
                    Num::Int(i) => write!(out, "{i}"),
                    Num::Float(f) => write!(out, "{f}"),
                })
                .is_some(),
            KeyColumn::Bool(b) => b
                .is_valid(row)
                .then(|| out.write_str(if b.value(row) { "true" } else { "false" }))
                .is_some(),
        }
    }
}

/// Record batches held in memory, one list per partition: the source of a
/// micro-batch, and of tests.
#[derive(Debug, Clone)]
pub struct BatchSource {
    partitions: Vec<Vec<RecordBatch>>,
}

impl BatchSource {
    /// A source whose partition `i` yields `partitions[i]`.
    pub fn new(partitions: Vec<Vec<RecordBatch>>) -> Self {
        BatchSource { partitions }
    }

    /// Spreads `batches` round-robin over `partitions` partitions (at least
    /// one).
    pub fn spread(batches: Vec<RecordBatch>, partitions: usize) -> Self {
        let mut parts = vec![Vec::new(); partitions.max(1)];
        let n = parts.len();
        for (i, batch) in batches.into_iter().enumerate() {
            parts[i % n].push(batch);
        }
        BatchSource { partitions: parts }
    }
}

impl PartitionSource for BatchSource {
    type Item = RecordBatch;

    fn num_partitions(&self) -> usize {
        self.partitions.len()
    }

    fn read<'a>(
        &'a self,
        partition: usize,
        _: &'a TaskContext,
    ) -> Result<BoxIter<'a, RecordBatch>> {
        // Cloning a RecordBatch clones `Arc`s, not data.
        Ok(Box::new(self.partitions[partition].iter().cloned()))
    }

    fn describe(&self) -> String {
        "batches".to_owned()
    }
}

impl Context {
    /// A dataset over record batches held in memory, spread round-robin over
    /// `partitions` partitions.
    pub fn from_batches(&self, batches: Vec<RecordBatch>, partitions: usize) -> Rdd<RecordBatch> {
        self.from_source(BatchSource::spread(batches, partitions))
    }
}
