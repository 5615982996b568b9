//! A stream's declared schema: column names, types and nullability, as
//! written in the `[[stream]]` config, and the Arrow schema they map to.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Column types a stream schema can declare (`type = "int64"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// UTF-8 text: Arrow `Utf8`.
    String,
    /// A signed 64-bit integer: Arrow `Int64`.
    Int64,
    /// A 64-bit float: Arrow `Float64`. Only finite values are accepted.
    Float64,
    /// `true` or `false`: Arrow `Boolean`.
    Bool,
    /// An instant, kept as milliseconds since the Unix epoch: Arrow
    /// `Timestamp(Millisecond, "UTC")`. Written as integer epoch
    /// milliseconds or as an RFC 3339 string.
    Timestamp,
}

impl ColumnType {
    /// The name used in the config and in dead-letter reasons.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// Whether numeric aggregates (sum, min, max, mean, top_k) can read it.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int64 | ColumnType::Float64)
    }

    /// The Arrow type the column is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The time zone of every timestamp column.
pub(super) const UTC: &str = "UTC";

/// One declared column: `{ name = "amount", type = "int64", nullable = false }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// Column name: the JSON field name, and the Arrow column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// Whether the value may be absent. Default `true`. A record that lacks
    /// a value for a non-nullable column is dead-lettered.
    #[serde(default = "nullable_by_default")]
    pub nullable: bool,
}

fn nullable_by_default() -> bool {
    true
}

impl ColumnDef {
    /// A nullable column.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        ColumnDef {
            name: name.into(),
            ty,
            nullable: true,
        }
    }

    /// A column that must always have a value.
    pub fn required(name: impl Into<String>, ty: ColumnType) -> Self {
        ColumnDef {
            nullable: false,
            ..ColumnDef::new(name, ty)
        }
    }

    /// The Arrow field of this column.
    pub fn field(&self) -> Field {
        Field::new(&self.name, self.ty.data_type(), self.nullable)
    }
}

/// The Arrow schema of `columns`, in order.
pub(super) fn arrow_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(ColumnDef::field).collect::<Vec<_>>(),
    ))
}

/// A schema that cannot describe a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// `format = "text"` was given a schema; text always has one column,
    /// `line`.
    #[error("format text takes no schema: its records are one column `line`")]
    TextWithSchema,
    /// A json or csv stream declared no column.
    #[error("format {format} needs a schema with at least one column")]
    Empty {
        /// `json` or `csv`.
        format: &'static str,
    },
    /// A column has an empty name.
    #[error("column {index} of the schema has an empty name")]
    EmptyName {
        /// Position of the column (from 0).
        index: usize,
    },
    /// Two columns have the same name.
    #[error("column `{name}` is declared more than once")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
}

/// Checks that `columns` can be the schema of a `format` stream.
pub(super) fn validate(format: &'static str, columns: &[ColumnDef]) -> Result<(), SchemaError> {
    if columns.is_empty() {
        return Err(SchemaError::Empty { format });
    }
    let mut seen = HashSet::with_capacity(columns.len());
    for (index, column) in columns.iter().enumerate() {
        if column.name.is_empty() {
            return Err(SchemaError::EmptyName { index });
        }
        if !seen.insert(column.name.as_str()) {
            return Err(SchemaError::Duplicate {
                name: column.name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_defs_deserialize_with_defaults() {
        let cols: Vec<ColumnDef> = serde_json::from_str(
            r#"[{"name":"user","type":"string","nullable":false},
                {"name":"ts","type":"timestamp"}]"#,
        )
        .unwrap();
        assert_eq!(
            cols,
            vec![
                ColumnDef::required("user", ColumnType::String),
                ColumnDef::new("ts", ColumnType::Timestamp),
            ]
        );
        for ty in ["string", "int64", "float64", "bool", "timestamp"] {
            let t: ColumnType = serde_json::from_str(&format!("{ty:?}")).unwrap();
            assert_eq!(t.name(), ty);
        }
    }

    #[test]
    fn column_defs_reject_unknown_keys_and_types() {
        let unknown =
            serde_json::from_str::<ColumnDef>(r#"{"name":"a","type":"int64","nulable":true}"#);
        assert!(unknown.unwrap_err().to_string().contains("nulable"));
        let bad_type = serde_json::from_str::<ColumnDef>(r#"{"name":"a","type":"int32"}"#);
        assert!(bad_type.unwrap_err().to_string().contains("int32"));
    }

    #[test]
    fn arrow_types() {
        let schema = arrow_schema(&[
            ColumnDef::required("s", ColumnType::String),
            ColumnDef::new("i", ColumnType::Int64),
            ColumnDef::new("f", ColumnType::Float64),
            ColumnDef::new("b", ColumnType::Bool),
            ColumnDef::new("t", ColumnType::Timestamp),
        ]);
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            vec![
                DataType::Utf8,
                DataType::Int64,
                DataType::Float64,
                DataType::Boolean,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            ]
        );
        assert!(!schema.field(0).is_nullable());
        assert!(schema.field(1).is_nullable());
    }

    #[test]
    fn validation_names_the_problem() {
        let a = ColumnDef::new("a", ColumnType::Int64);
        assert_eq!(
            validate("json", &[]),
            Err(SchemaError::Empty { format: "json" })
        );
        assert_eq!(
            validate("csv", &[a.clone(), ColumnDef::new("", ColumnType::Bool)]),
            Err(SchemaError::EmptyName { index: 1 })
        );
        let err = validate("csv", &[a.clone(), a.clone()]).unwrap_err();
        assert_eq!(err.to_string(), "column `a` is declared more than once");
        assert_eq!(validate("json", &[a]), Ok(()));
    }
}
