//! Reading a Parquet file written by another tool *as a stream*: the
//! stream's columns are matched by name, each read with a type it can be
//! cast to losslessly enough for a view (any integer width as `int64`,
//! large or dictionary-encoded strings as `string`, any timestamp unit as
//! `timestamp`), a column found only in a hive-style `key=value` folder is
//! that folder's value, and a nullable column found nowhere is null.
//! Anything else is refused before a row is read, naming the file and the
//! column.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;

use super::scan::field_names;
use crate::error::{Error, Result};

/// Where one output column comes from.
#[derive(Debug)]
enum Source {
    /// The file's column of this name, cast to the output type when it
    /// differs.
    File { name: String, cast: bool },
    /// A hive partition value (checked to convert to the column's type).
    Partition(String),
    /// Not in the file (or `__HIVE_DEFAULT_PARTITION__`): null.
    Null,
}

/// How one file's batches become the stream's.
#[derive(Debug)]
pub struct Adapter {
    label: String,
    /// The output schema: the requested stream columns, all nullable.
    schema: SchemaRef,
    sources: Vec<Source>,
    /// Root column indices of the file to read.
    file_columns: Vec<usize>,
}

impl Adapter {
    /// Plans reading `columns` of `target` (all of them with `None`) from
    /// the file `label` with footer `metadata` found under `partitions`.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the file and the column: a type that cannot
    /// be read as the stream's, a non-nullable stream column missing from
    /// the file and its folders, or a requested column the stream does not
    /// have.
    pub fn plan(
        label: &str,
        metadata: &ArrowReaderMetadata,
        target: &SchemaRef,
        columns: Option<&[String]>,
        partitions: &[(String, Option<String>)],
    ) -> Result<Self> {
        let file = metadata.schema();
        let wanted: Vec<&Field> = match columns {
            None => target.fields().iter().map(|f| f.as_ref()).collect(),
            Some(names) => names
                .iter()
                .map(|n| {
                    target.field_with_name(n).map_err(|_| {
                        Error::plan(format!(
                            "{label}: the stream has no column `{n}` (columns: {})",
                            field_names(target)
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut sources = Vec::with_capacity(wanted.len());
        let mut fields = Vec::with_capacity(wanted.len());
        let mut file_columns = Vec::new();
        for field in wanted {
            let name = field.name();
            let source = if let Ok(index) = file.index_of(name) {
                let found = file.field(index).data_type();
                if !readable_as(found, field.data_type()) {
                    return Err(Error::plan(format!(
                        "{label}: column `{name}` is {found} in the file, but the stream's `{name}` is {} (files of a history must have the stream's columns, matched by name, with compatible types)",
                        field.data_type()
                    )));
                }
                file_columns.push(index);
                Source::File {
                    name: name.clone(),
                    cast: found != field.data_type(),
                }
            } else if let Some((_, value)) = partitions.iter().rev().find(|(k, _)| k == name) {
                // Converted once here, so that a folder value of the wrong
                // type fails before a row is read.
                match value {
                    None => Source::Null,
                    Some(v) => {
                        let one: ArrayRef = Arc::new(StringArray::from(vec![v.as_str()]));
                        let options = CastOptions {
                            safe: false,
                            ..Default::default()
                        };
                        cast_with_options(&one, field.data_type(), &options).map_err(|e| {
                            Error::plan(format!(
                                "{label}: folder `{name}={v}` is not a {} value for the stream's column `{name}`: {e}",
                                field.data_type()
                            ))
                        })?;
                        Source::Partition(v.clone())
                    }
                }
            } else if field.is_nullable() {
                Source::Null
            } else {
                return Err(Error::plan(format!(
                    "{label}: no column `{name}`, which the stream requires (columns: {}; a nullable stream column may be missing, and a `{name}=value` folder provides it)",
                    field_names(file)
                )));
            };
            sources.push(source);
            fields.push(Field::new(name, field.data_type().clone(), true));
        }
        file_columns.sort_unstable();
        file_columns.dedup();
        Ok(Adapter {
            label: label.to_owned(),
            schema: Arc::new(Schema::new(fields)),
            sources,
            file_columns,
        })
    }

    /// The file's root columns to read.
    pub fn file_columns(&self) -> Vec<usize> {
        self.file_columns.clone()
    }

    /// One batch as read (the projected file columns) as the stream's.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file and column for a value that
    /// does not convert (a partition value that is not a number for an
    /// `int64` column, say).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        let columns = self
            .sources
            .iter()
            .zip(self.schema.fields())
            .map(|(source, field)| {
                let to = field.data_type();
                let fail = |e: arrow::error::ArrowError| {
                    Error::execution(format!("{}: column `{}`: {e}", self.label, field.name()))
                };
                Ok(match source {
                    Source::File { name, cast } => {
                        let column = batch.column_by_name(name).ok_or_else(|| {
                            Error::execution(format!(
                                "{}: column `{name}` was not read",
                                self.label
                            ))
                        })?;
                        if *cast {
                            cast_with_options(column, to, &options).map_err(fail)?
                        } else {
                            Arc::clone(column)
                        }
                    }
                    Source::Partition(value) => {
                        let strings: ArrayRef =
                            Arc::new(StringArray::from(vec![value.as_str(); rows]));
                        cast_with_options(&strings, to, &options).map_err(fail)?
                    }
                    Source::Null => new_null_array(to, rows),
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::execution(format!("{}: {e}", self.label)))
    }
}

/// Whether a file column of type `found` may be read as a stream column of
/// type `want`.
fn readable_as(found: &DataType, want: &DataType) -> bool {
    use DataType as T;
    if found == want {
        return true;
    }
    let string = |t: &DataType| matches!(t, T::Utf8 | T::LargeUtf8 | T::Utf8View);
    match (found, want) {
        (T::Dictionary(_, value), T::Utf8) => string(value),
        (f, T::Utf8) => string(f),
        (T::Int8 | T::Int16 | T::Int32 | T::Int64 | T::UInt8 | T::UInt16 | T::UInt32, T::Int64) => {
            true
        }
        (
            T::Float16
            | T::Float32
            | T::Float64
            | T::Int8
            | T::Int16
            | T::Int32
            | T::Int64
            | T::UInt8
            | T::UInt16
            | T::UInt32,
            T::Float64,
        ) => true,
        (T::Timestamp(_, _) | T::Date32 | T::Date64, T::Timestamp(TimeUnit::Millisecond, _)) => {
            true
        }
        (T::Dictionary(_, value), want) => readable_as(value, want),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatible_types() {
        use DataType as T;
        let ms = T::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        for (found, want) in [
            (T::LargeUtf8, T::Utf8),
            (
                T::Dictionary(Box::new(T::Int32), Box::new(T::Utf8)),
                T::Utf8,
            ),
            (T::Int32, T::Int64),
            (T::UInt32, T::Int64),
            (T::Float32, T::Float64),
            (T::Int64, T::Float64),
            (T::Timestamp(TimeUnit::Microsecond, None), ms.clone()),
            (
                T::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                ms.clone(),
            ),
            (T::Date32, ms.clone()),
        ] {
            assert!(readable_as(&found, &want), "{found} as {want}");
        }
        for (found, want) in [
            (T::Utf8, T::Int64),
            (T::UInt64, T::Int64),
            (T::Float64, T::Int64),
            (T::Int64, T::Utf8),
            (T::Boolean, T::Int64),
            (T::Int64, ms.clone()),
        ] {
            assert!(!readable_as(&found, &want), "{found} as {want}");
        }
    }
}
