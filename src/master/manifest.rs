//! The manifest: which Parquet files make up the master dataset.
//!
//! Readers trust it instead of listing directories: a file that is being
//! written, or was left half-written by a crash, is not in it; a file is
//! listed only after it is complete.

use serde::{Deserialize, Serialize};

/// One stream's records of one sealed epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochFile {
    /// The stream.
    pub stream: String,
    /// The epoch.
    pub epoch: u64,
    /// Object path under the dataset root.
    pub path: String,
    /// Records in the file.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
}

impl EpochFile {
    /// The object path of a stream's file for an epoch: deterministic, so a
    /// rewrite after a crash replaces the same object.
    pub fn path_for(stream: &str, epoch: u64) -> String {
        format!("{stream}/epoch-{epoch:020}.parquet")
    }
}

/// The list of complete files and how far epochs are sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    #[serde(default = "version_one")]
    pub version: u32,
    /// Every epoch `<=` this is sealed for every stream: no record can be
    /// added to it any more. `None` until the first epoch is sealed.
    pub sealed_through: Option<u64>,
    /// The files, sorted by stream then epoch. An epoch in which a stream
    /// received nothing has no file.
    pub files: Vec<EpochFile>,
}

fn version_one() -> u32 {
    1
}

impl Manifest {
    /// Parses and checks a manifest.
    ///
    /// # Errors
    ///
    /// A message when the JSON is malformed, the version unknown, or a path
    /// is not the one its stream and epoch imply.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid manifest: {e}"))?;
        if m.version != 1 {
            return Err(format!(
                "manifest version {} is not supported (expected 1)",
                m.version
            ));
        }
        for f in &m.files {
            if f.path != EpochFile::path_for(&f.stream, f.epoch) {
                return Err(format!(
                    "file `{}` does not match stream `{}` epoch {}",
                    f.path, f.stream, f.epoch
                ));
            }
        }
        Ok(m)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes")
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
        self.files
            .sort_by(|a, b| (a.stream.as_str(), a.epoch).cmp(&(b.stream.as_str(), b.epoch)));
        self.sealed_through = Some(self.sealed_through.map_or(epoch, |s| s.max(epoch)));
        self.version = 1;
    }

    /// The files of `stream` in sealed epochs `<= through`: a batch run's
    /// snapshot.
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
    }
}
