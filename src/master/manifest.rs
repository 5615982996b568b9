//! The manifest: which Parquet files make up the master dataset.
//!
//! Readers trust it instead of listing directories: a file that is being
//! written, or was left half-written by a crash, is not in it; a file is
//! listed only after it is complete.
//!
//! A file holds one stream's records of one sealed epoch, as the sealer
//! wrote it, or of several consecutive epochs, as compaction merged them
//! (its [`segments`](EpochFile::segments) say how many rows each epoch
//! has, in file order). Every sealed epoch of a stream is in exactly one
//! listed file; [`Manifest::from_json`] refuses a manifest where two files
//! share an epoch. Files that compaction replaced are [`retired`]
//! (Manifest::retired): no longer part of the dataset, kept for readers of
//! an older manifest until their retention has passed.

use serde::{Deserialize, Serialize};

/// One stream's records of one sealed epoch, or of several (compacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochFile {
    /// The stream.
    pub stream: String,
    /// The epoch; for a compacted file, its last epoch.
    pub epoch: u64,
    /// Object path under the dataset root.
    pub path: String,
    /// Records in the file.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
    /// A compacted file's epochs in file order, each with its rows (they
    /// add up to `rows`); empty for a file of one epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// One epoch's rows in a compacted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The epoch.
    pub epoch: u64,
    /// Its rows, which follow the previous segment's in the file.
    pub rows: u64,
}

/// A file compaction replaced: not part of the dataset any more, deleted
/// once its retention has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// Object path under the dataset root.
    pub path: String,
    /// When it left the dataset (milliseconds since the Unix epoch).
    pub since_ms: i64,
}

impl EpochFile {
    /// The object path of a stream's file for an epoch: deterministic, so a
    /// rewrite after a crash replaces the same object.
    pub fn path_for(stream: &str, epoch: u64) -> String {
        format!("{stream}/epoch-{epoch:020}.parquet")
    }

    /// The object path of a stream's compacted file of epochs
    /// `first..=last`.
    pub fn compacted_path_for(stream: &str, first: u64, last: u64) -> String {
        format!("{stream}/compacted-{first:020}-{last:020}.parquet")
    }

    /// Whether compaction wrote it.
    pub fn is_compacted(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Its first epoch.
    pub fn first_epoch(&self) -> u64 {
        self.segments.first().map_or(self.epoch, |s| s.epoch)
    }

    /// Its epochs with their rows, in file order.
    pub fn epochs(&self) -> Vec<Segment> {
        if self.segments.is_empty() {
            vec![Segment {
                epoch: self.epoch,
                rows: self.rows,
            }]
        } else {
            self.segments.clone()
        }
    }

    fn check(&self) -> Result<(), String> {
        let expected = if self.segments.is_empty() {
            Self::path_for(&self.stream, self.epoch)
        } else {
            let ordered = self.segments.windows(2).all(|w| w[0].epoch < w[1].epoch);
            let rows: u64 = self.segments.iter().map(|s| s.rows).sum();
            if !ordered || self.segments.last().map(|s| s.epoch) != Some(self.epoch) {
                return Err(format!(
                    "file `{}`: its segments are not in epoch order ending at epoch {}",
                    self.path, self.epoch
                ));
            }
            if rows != self.rows {
                return Err(format!(
                    "file `{}`: its segments have {rows} rows, the file {}",
                    self.path, self.rows
                ));
            }
            Self::compacted_path_for(&self.stream, self.first_epoch(), self.epoch)
        };
        if self.path != expected {
            return Err(format!(
                "file `{}` does not match stream `{}` epoch {}",
                self.path, self.stream, self.epoch
            ));
        }
        Ok(())
    }
}

/// The list of complete files and how far epochs are sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version: 1, or 2 once compaction has written to it (so that
    /// a server too old to know compacted files refuses the manifest
    /// instead of misreading it).
    #[serde(default = "version_one")]
    pub version: u32,
    /// Every epoch `<=` this is sealed for every stream: no record can be
    /// added to it any more. `None` until the first epoch is sealed.
    pub sealed_through: Option<u64>,
    /// The files, sorted by stream then epoch. An epoch in which a stream
    /// received nothing has no file.
    pub files: Vec<EpochFile>,
    /// Files compaction replaced, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
}

fn version_one() -> u32 {
    1
}

/// Whether `path` is one this dataset writes (`STREAM/epoch-….parquet` or
/// `STREAM/compacted-…-….parquet`), so that nothing read from a manifest
/// can name an object elsewhere.
fn is_data_path(path: &str) -> bool {
    let Some((stream, name)) = path.split_once('/') else {
        return false;
    };
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    let stream_ok = !stream.is_empty()
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let Some(stem) = name.strip_suffix(".parquet") else {
        return false;
    };
    stream_ok
        && match (stem.strip_prefix("epoch-"), stem.strip_prefix("compacted-")) {
            (Some(e), _) => digits(e),
            (_, Some(range)) => range
                .split_once('-')
                .is_some_and(|(a, b)| digits(a) && digits(b)),
            _ => false,
        }
}

impl Manifest {
    /// Parses and checks a manifest.
    ///
    /// # Errors
    ///
    /// A message when the JSON is malformed, the version unknown, a path
    /// is not the one its stream and epochs imply, or two files of a
    /// stream hold the same epoch.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        if !(1..=2).contains(&m.version) {
            return Err(format!(
                "manifest version {} is not supported (expected 1 or 2)",
                m.version
            ));
        }
        let mut last: Option<(&str, u64)> = None;
        for f in &m.files {
            f.check()?;
            if let Some((stream, epoch)) = last
                && stream == f.stream
                && f.first_epoch() <= epoch
            {
                return Err(format!(
                    "files of stream `{stream}` overlap or are out of order at `{}`",
                    f.path
                ));
            }
            last = Some((&f.stream, f.epoch));
        }
        if let Some(r) = m.retired.iter().find(|r| !is_data_path(&r.path)) {
            return Err(format!("retired file `{}` is not a data file", r.path));
        }
        Ok(m)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        let mut out = self.clone();
        let compacted = self.files.iter().any(EpochFile::is_compacted) || !self.retired.is_empty();
        out.version = if compacted { 2 } else { 1 };
        serde_json::to_string_pretty(&out).expect("a manifest always serializes")
    }

    /// Records that `files` make up epoch `epoch` and that every epoch up to
    /// it is sealed. Replaces any earlier entries of the same stream and
    /// epoch, so sealing an epoch again after a crash is idempotent.
    pub fn seal(&mut self, epoch: u64, files: Vec<EpochFile>) {
        for f in files {
            self.files
                .retain(|g| !(g.stream == f.stream && g.epoch == f.epoch));
            self.files.push(f);
        }
        self.sort();
        self.sealed_through = Some(self.sealed_through.map_or(epoch, |s| s.max(epoch)));
        self.version = self.version.max(1);
    }

    fn sort(&mut self) {
        self.files
            .sort_by(|a, b| (a.stream.as_str(), a.epoch).cmp(&(b.stream.as_str(), b.epoch)));
    }

    /// Replaces the files at `inputs` (paths, all listed) by `merged`,
    /// retiring them at `now_ms`. `false`, changing nothing, when one of
    /// them is not listed any more.
    pub fn replace_files(&mut self, inputs: &[String], merged: EpochFile, now_ms: i64) -> bool {
        if !inputs
            .iter()
            .all(|p| self.files.iter().any(|f| &f.path == p))
        {
            return false;
        }
        self.files.retain(|f| !inputs.contains(&f.path));
        self.files.push(merged);
        self.sort();
        self.retired.extend(inputs.iter().map(|p| Retired {
            path: p.clone(),
            since_ms: now_ms,
        }));
        self.version = 2;
        true
    }

    /// The files of `stream` in sealed epochs `<= through`: a batch run's
    /// snapshot. A compacted file is in it when its last epoch is (batch
    /// runs read through `sealed_through`, and compaction merges sealed
    /// epochs only, so no file straddles a snapshot).
    pub fn snapshot<'a>(
        &'a self,
        stream: &'a str,
        through: u64,
    ) -> impl Iterator<Item = &'a EpochFile> + 'a {
        self.files
            .iter()
            .filter(move |f| f.stream == stream && f.epoch <= through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(stream: &str, epoch: u64) -> EpochFile {
        EpochFile {
            stream: stream.into(),
            epoch,
            path: EpochFile::path_for(stream, epoch),
            rows: 1,
            bytes: 10,
            segments: Vec::new(),
        }
    }

    #[test]
    fn seal_is_idempotent_and_sorted() {
        let mut m = Manifest::default();
        m.seal(2, vec![file("b", 2), file("a", 2)]);
        m.seal(1, vec![file("a", 1)]);
        m.seal(2, vec![file("a", 2)]);
        assert_eq!(m.sealed_through, Some(2));
        let names: Vec<(&str, u64)> = m
            .files
            .iter()
            .map(|f| (f.stream.as_str(), f.epoch))
            .collect();
        assert_eq!(names, vec![("a", 1), ("a", 2), ("b", 2)]);
        assert_eq!(m.snapshot("a", 1).count(), 1);
        let back = Manifest::from_json(m.to_json().as_bytes()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn bad_manifests_are_rejected_with_a_reason() {
        assert!(
            Manifest::from_json(b"{")
                .unwrap_err()
                .contains("not a valid manifest")
        );
        let wrong_path = r#"{"version":1,"sealed_through":1,"files":[{"stream":"a","epoch":1,"path":"../etc/passwd","rows":1,"bytes":1}]}"#;
        assert!(
            Manifest::from_json(wrong_path.as_bytes())
                .unwrap_err()
                .contains("does not match")
        );
        let future = r#"{"version":9,"sealed_through":null,"files":[]}"#;
        assert!(
            Manifest::from_json(future.as_bytes())
                .unwrap_err()
                .contains("version 9")
        );
        let escape = r#"{"version":2,"sealed_through":1,"files":[],"retired":[{"path":"../x/epoch-00000000000000000001.parquet","since_ms":1}]}"#;
        assert!(
            Manifest::from_json(escape.as_bytes())
                .unwrap_err()
                .contains("not a data file")
        );
    }

    fn compacted(stream: &str, segments: &[(u64, u64)]) -> EpochFile {
        let segments: Vec<Segment> = segments
            .iter()
            .map(|&(epoch, rows)| Segment { epoch, rows })
            .collect();
        EpochFile {
            stream: stream.into(),
            epoch: segments.last().unwrap().epoch,
            path: EpochFile::compacted_path_for(
                stream,
                segments[0].epoch,
                segments.last().unwrap().epoch,
            ),
            rows: segments.iter().map(|s| s.rows).sum(),
            bytes: 30,
            segments,
        }
    }

    #[test]
    fn compaction_replaces_files_retires_them_and_bumps_the_version() {
        let mut m = Manifest::default();
        m.seal(
            3,
            vec![file("a", 1), file("a", 2), file("a", 3), file("b", 2)],
        );
        assert!(m.to_json().contains("\"version\": 1"));
        let inputs: Vec<String> = (1..=2).map(|e| EpochFile::path_for("a", e)).collect();
        assert!(m.replace_files(&inputs, compacted("a", &[(1, 1), (2, 1)]), 77));
        let names: Vec<(&str, u64, u64)> = m
            .files
            .iter()
            .map(|f| (f.stream.as_str(), f.first_epoch(), f.epoch))
            .collect();
        assert_eq!(names, vec![("a", 1, 2), ("a", 3, 3), ("b", 2, 2)]);
        assert_eq!(m.retired.len(), 2);
        assert_eq!(m.snapshot("a", 3).map(|f| f.rows).sum::<u64>(), 3);
        let json = m.to_json();
        assert!(json.contains("\"version\": 2"), "{json}");
        let back = Manifest::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.files, m.files);
        // A second replacement of the same inputs finds them gone.
        assert!(!m.replace_files(&inputs, compacted("a", &[(1, 1), (2, 1)]), 78));
    }

    #[test]
    fn manifests_that_would_count_an_epoch_twice_are_refused() {
        let mut m = Manifest::default();
        m.seal(2, vec![file("a", 2)]);
        m.files.push(compacted("a", &[(1, 1), (2, 1)]));
        m.sort();
        let err = Manifest::from_json(m.to_json().as_bytes()).unwrap_err();
        assert!(err.contains("overlap"), "{err}");

        let mut bad = compacted("a", &[(1, 1), (2, 1)]);
        bad.rows = 5;
        let m = Manifest {
            files: vec![bad],
            sealed_through: Some(2),
            ..Manifest::default()
        };
        let err = Manifest::from_json(m.to_json().as_bytes()).unwrap_err();
        assert!(err.contains("segments have 2 rows"), "{err}");

        let mut renamed = compacted("a", &[(1, 1), (2, 1)]);
        renamed.path = EpochFile::path_for("a", 2);
        let m = Manifest {
            files: vec![renamed],
            sealed_through: Some(2),
            ..Manifest::default()
        };
        let err = Manifest::from_json(m.to_json().as_bytes()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}
