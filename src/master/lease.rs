//! One writer per master dataset: a lease object beside the manifest.
//!
//! Two servers that seal into the same dataset would overwrite each other's
//! epoch files and manifest, and acknowledged records would disappear from
//! one of them. So a server takes the dataset's **writer lease**
//! (`_writer.lease`, JSON naming its owner) before it writes anything, renews
//! it while it runs, and releases it when it stops. Another owner whose
//! lease is fresh is refused with an error naming it; a lease that has not
//! been renewed for its time-to-live belonged to a server that is gone (a
//! `kill -9`, a lost machine) and may be taken over.
//!
//! The owner is a stable id kept in the server's state directory, so a
//! server restarted on its own state (also after `kill -9`) takes its lease
//! back at once.
//!
//! # Atomicity
//!
//! Taking a free lease is a conditional put (`PutMode::Create`): atomic on
//! local disk and on S3. Taking over an expired one deletes it first and
//! then creates it conditionally; two servers racing for the same expired
//! lease can both pass the delete, but only one create succeeds; the loser
//! is refused. Every renewal reads the lease back first: a server that
//! finds another owner there stops writing (every later write fails with
//! [`Error::Execution`] naming the lease) instead of overwriting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::MasterStore;
use crate::error::{Error, Result};

/// The lease object, beside `_manifest.json`.
pub const LEASE: &str = "_writer.lease";

/// What the lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The owner's stable id (kept in its state directory).
    pub owner: String,
    /// The owner's state directory, for the error message.
    pub state_dir: String,
    /// The owner's host name, if known.
    pub host: String,
    /// The owner's process id.
    pub pid: u32,
    /// When the owner last renewed it (ms since the Unix epoch).
    pub renewed_at_ms: u64,
    /// How long it stays valid after a renewal, in ms.
    pub ttl_ms: u64,
}

/// The writes a [`MasterStore`] may make, shared by its clones.
#[derive(Debug, Clone, Default)]
pub(super) struct WriteGuard(Arc<AtomicU8>);

// 0: no lease taken (the default): writes are allowed.
const HELD: u8 = 1;
const LOST: u8 = 2;
const READ_ONLY: u8 = 3;

impl WriteGuard {
    /// `Ok` unless this server had the lease and lost it (a dataset opened
    /// without a lease, e.g. by tests or tools, writes freely).
    pub(super) fn check(&self, url: &str) -> Result<()> {
        match self.0.load(Ordering::Acquire) {
            LOST => Err(Error::execution(format!(
                "master dataset `{url}`: this server no longer holds its writer lease ({LEASE}); it was taken over by another server or released, so this server writes nothing more to it"
            ))),
            READ_ONLY => Err(Error::execution(format!(
                "master dataset `{url}` is opened read-only (storage.master_read_only); this server writes nothing to it"
            ))),
            _ => Ok(()),
        }
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This server's hold on a master dataset's writer lease.
#[derive(Debug, Clone)]
pub struct WriterLease {
    master: MasterStore,
    me: LeaseRecord,
}

impl MasterStore {
    /// Opens the dataset for reading only: every write fails from now on,
    /// for every clone of this store; no lease is needed.
    pub fn set_read_only(&self) {
        self.guard.set(READ_ONLY);
    }

    /// Takes the dataset's writer lease for `owner` (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the current owner when another server holds a
    /// fresh lease, or when the lease object cannot be read as one;
    /// [`Error::Execution`] when the store fails.
    pub async fn acquire_writer_lease(
        &self,
        owner: &str,
        state_dir: &str,
        ttl: Duration,
    ) -> Result<WriterLease> {
        let me = LeaseRecord {
            owner: owner.to_owned(),
            state_dir: state_dir.to_owned(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            renewed_at_ms: now_ms(),
            ttl_ms: ttl.as_millis() as u64,
        };
        let lease = WriterLease {
            master: self.clone(),
            me,
        };
        if !lease.create().await? {
            match lease.read().await? {
                Some(held) if held.owner == lease.me.owner => {}
                Some(held) if held.renewed_at_ms + held.ttl_ms > now_ms() => {
                    return Err(lease.held_error(&held));
                }
                // Expired (its server is gone), or deleted meanwhile.
                _ => {
                    lease.delete().await?;
                    if !lease.create().await? {
                        let held = lease.read().await?;
                        return Err(match held {
                            Some(h) => lease.held_error(&h),
                            None => Error::plan(format!(
                                "master dataset `{}`: another server is taking over its writer lease right now",
                                self.url
                            )),
                        });
                    }
                }
            }
        }
        lease.renew().await?;
        Ok(lease)
    }
}

impl WriterLease {
    fn path() -> Path {
        Path::from(LEASE)
    }

    fn body(&self) -> Result<PutPayload> {
        let mut me = self.me.clone();
        me.renewed_at_ms = now_ms();
        serde_json::to_vec(&me)
            .map(PutPayload::from)
            .map_err(|e| Error::Internal(format!("encoding the writer lease: {e}")))
    }

    /// Creates the lease object if there is none; `false` if there is one.
    async fn create(&self) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .master
            .store
            .put_opts(&Self::path(), self.body()?, opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.master.io_error("create the writer lease", e)),
        }
    }

    async fn delete(&self) -> Result<()> {
        match self.master.store.delete(&Self::path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.master.io_error("delete the writer lease", e)),
        }
    }

    /// The lease as stored; `None` when there is none.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for an object that is not a lease.
    pub async fn read(&self) -> Result<Option<LeaseRecord>> {
        let found = match self.master.store.get(&Self::path()).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.master.io_error("read the writer lease", e)),
        };
        let bytes = found
            .bytes()
            .await
            .map_err(|e| self.master.io_error("read the writer lease", e))?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::plan(format!(
                "master dataset `{}`: {LEASE} is not a writer lease ({e}); if no server uses this dataset, delete that file",
                self.master.url
            ))
        })
    }

    fn held_error(&self, held: &LeaseRecord) -> Error {
        let age_s = now_ms().saturating_sub(held.renewed_at_ms) as f64 / 1e3;
        let free_in_s = (held.renewed_at_ms + held.ttl_ms).saturating_sub(now_ms()) as f64 / 1e3;
        Error::plan(format!(
            "master dataset `{}` has another writer: the server with state directory `{}` (host `{}`, pid {}) holds its writer lease ({LEASE}, renewed {age_s:.0} s ago). A master dataset has one writer: give this server its own `storage.master_url`, or stop the other server (its lease is released when it stops, or expires {free_in_s:.0} s after its last renewal if it was killed)",
            self.master.url, held.state_dir, held.host, held.pid
        ))
    }

    /// Renews the lease: reads it back and, if it is still ours, writes a
    /// fresh renewal time. Call it well within the time-to-live.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when another owner holds it now or it is gone
    /// (from then on every write of this dataset fails), or the store fails
    /// (the lease is kept; retry).
    pub async fn renew(&self) -> Result<()> {
        match self.read().await? {
            Some(held) if held.owner == self.me.owner => {}
            other => {
                self.master.guard.set(LOST);
                let who = other.map_or_else(
                    || "nobody (the lease object is gone)".to_owned(),
                    |h| {
                        format!(
                            "the server with state directory `{}` (pid {})",
                            h.state_dir, h.pid
                        )
                    },
                );
                return Err(Error::execution(format!(
                    "master dataset `{}`: the writer lease is now held by {who}; this server stops writing to the dataset",
                    self.master.url
                )));
            }
        }
        self.master
            .store
            .put(&Self::path(), self.body()?)
            .await
            .map_err(|e| self.master.io_error("renew the writer lease", e))?;
        self.master.guard.set(HELD);
        Ok(())
    }

    /// Releases the lease (on shutdown): another server may take the
    /// dataset at once. This server writes nothing more to it.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store fails.
    pub async fn release(&self) -> Result<()> {
        self.master.guard.set(LOST);
        match self.read().await? {
            Some(held) if held.owner == self.me.owner => self.delete().await,
            _ => Ok(()),
        }
    }

    /// Whether this server may still write to the dataset.
    pub fn is_held(&self) -> bool {
        self.master.guard.0.load(Ordering::Acquire) == HELD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lamina-lease-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_second_writer_is_refused_and_the_first_keeps_writing() {
        let d = dir("second");
        let url = format!("file://{}", d.display());
        rt().block_on(async {
            let a = MasterStore::open(&url).unwrap();
            let b = MasterStore::open(&url).unwrap();
            let ttl = Duration::from_secs(30);
            let lease = a.acquire_writer_lease("A", "/state/a", ttl).await.unwrap();
            assert!(lease.is_held());
            let err = b
                .acquire_writer_lease("B", "/state/b", ttl)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("another writer") && err.contains("/state/a"),
                "{err}"
            );
            // The same owner (a restart on its own state) takes it back.
            let again = MasterStore::open(&url).unwrap();
            again
                .acquire_writer_lease("A", "/state/a", ttl)
                .await
                .unwrap();
            lease.renew().await.unwrap();
            a.write_manifest(&Default::default()).await.unwrap();
            // Released: B may take it, and A may not write any more.
            lease.release().await.unwrap();
            b.acquire_writer_lease("B", "/state/b", ttl).await.unwrap();
            let err = a.write_manifest(&Default::default()).await.unwrap_err();
            assert!(err.to_string().contains("writer lease"), "{err}");
            assert!(lease.renew().await.is_err());
        });
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_old_owner_stops_writing() {
        let d = dir("expired");
        let url = format!("file://{}", d.display());
        rt().block_on(async {
            let a = MasterStore::open(&url).unwrap();
            let b = MasterStore::open(&url).unwrap();
            let lease_a = a
                .acquire_writer_lease("A", "/state/a", Duration::from_millis(1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            b.acquire_writer_lease("B", "/state/b", Duration::from_secs(30))
                .await
                .unwrap();
            let err = lease_a.renew().await.unwrap_err().to_string();
            assert!(err.contains("/state/b"), "{err}");
            assert!(!lease_a.is_held());
            assert!(a.write_manifest(&Default::default()).await.is_err());
            b.write_manifest(&Default::default()).await.unwrap();
        });
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_read_only_store_writes_nothing_and_needs_no_lease() {
        let d = dir("readonly");
        let url = format!("file://{}", d.display());
        rt().block_on(async {
            let writer = MasterStore::open(&url).unwrap();
            writer
                .acquire_writer_lease("A", "/state/a", Duration::from_secs(30))
                .await
                .unwrap();
            let reader = MasterStore::open(&url).unwrap();
            reader.set_read_only();
            assert!(reader.manifest().await.is_ok());
            let err = reader
                .write_manifest(&Default::default())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("read-only"), "{err}");
            writer.write_manifest(&Default::default()).await.unwrap();
        });
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn garbage_in_the_lease_object_is_a_clear_error() {
        let d = dir("garbage");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(LEASE), b"not json").unwrap();
        let url = format!("file://{}", d.display());
        rt().block_on(async {
            let a = MasterStore::open(&url).unwrap();
            let err = a
                .acquire_writer_lease("A", "/s", Duration::from_secs(30))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a writer lease"), "{err}");
        });
        let _ = std::fs::remove_dir_all(d);
    }
}
