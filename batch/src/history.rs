//! Streams' histories: Parquet datasets written by other tools that every
//! batch run reads before the streams' own epochs (see
//! [`lamina::master::history`]).

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use lamina::master::history::HistoryDataset;
use lamina::master::scan::ScanFile;
use lamina::rdd::Rdd;
use lamina::{Context, Result};

/// One stream's history.
#[derive(Debug, Clone)]
pub struct StreamHistory {
    /// The datasets, read in this order.
    pub datasets: Vec<HistoryDataset>,
    /// The stream's schema: how the files are read (columns by name, cast
    /// to the stream's types).
    pub schema: SchemaRef,
}

/// The histories of streams, by stream name (streams without one are
/// absent).
pub type Histories = BTreeMap<String, StreamHistory>;

/// One stream's history files as one run sees them: listed once per run.
pub(crate) struct Listed {
    pub files: Vec<ScanFile>,
    pub bytes: u64,
    schema: SchemaRef,
}

impl Listed {
    pub(crate) async fn list(history: &StreamHistory) -> Result<Listed> {
        let mut files = Vec::new();
        let mut bytes = 0;
        for dataset in &history.datasets {
            let listing = dataset.list().await?;
            files.extend(listing.files);
            bytes += listing.bytes;
        }
        Ok(Listed {
            files,
            bytes,
            schema: history.schema.clone(),
        })
    }

    /// The files as the stream, only `columns` (all with `None`), and
    /// their rows.
    pub(crate) async fn scan(
        &self,
        ctx: &Context,
        columns: Option<&[String]>,
        progress: &std::sync::Arc<lamina::master::scan::ScanProgress>,
    ) -> Result<(Rdd<RecordBatch>, u64)> {
        lamina::master::history::scan_as(ctx, &self.files, columns, &self.schema, Some(progress))
            .await
    }
}
