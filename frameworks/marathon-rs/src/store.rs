//! The store: marathon-rs' state as entries, one per app (with its
//! versions), one per instance, and one for the rest
//! ([`State::to_entries`]), as Marathon keeps its ZooKeeper nodes: a write
//! carries only the entries that changed since the last one, so a change
//! costs a write of its own size, whatever the number of apps.
//!
//! Embedded: a file per entry in `<work-dir>/marathon-state/`, each written
//! to a temporary file, fsynced and renamed. Highly available:
//! [`zk::Entries`] under `<zk path>/state`, written over the leader's
//! ZooKeeper session and fenced (a deposed leader's write fails). A crash
//! leaves each entry old or new, never half of one. A state written by an
//! earlier marathon-rs as one document (`marathon-state.json`, or the
//! chunked document in ZooKeeper) is read, and written as entries at the
//! first change.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agora_marathon_core::marathon::{EntryError, State};
use agora_zk as zk;
use tracing::error;

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A one-document state (an earlier marathon-rs') is not a state.
    #[error("{path} is not a valid marathon-rs state: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// Stored entries are not a state.
    #[error("{path}: {source}")]
    Entries {
        /// Where.
        path: PathBuf,
        /// Why.
        source: EntryError,
    },
    /// The state does not serialise.
    #[error("cannot serialise the state: {0}")]
    Serialise(#[from] serde_json::Error),
    /// ZooKeeper failed (or another leader wrote).
    #[error(transparent)]
    Zk(#[from] zk::ZkError),
}

/// Where the state is kept.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Each entry as last written (or read), to write only what changed
    /// (compared whole: as cheap as a digest, and never wrong).
    written: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

#[derive(Clone)]
enum Backend {
    Dir(PathBuf),
    Zk {
        entries: Arc<zk::Entries>,
        /// Told when a write finds that another leader wrote since.
        fenced: Arc<tokio::sync::Notify>,
    },
}

impl Store {
    fn new(backend: Backend) -> Store {
        Store {
            backend,
            written: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The store in `work_dir` (created if missing).
    pub fn open(work_dir: &Path) -> Result<Store, StoreError> {
        let dir = work_dir.join("marathon-state");
        fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Store::new(Backend::Dir(dir)))
    }

    /// The state in ZooKeeper under `dir`, over `client`'s session (the
    /// leader's), with its current content.
    pub async fn zk(
        client: zk::zookeeper_client::Client,
        url: &zk::ZkUrl,
        dir: String,
    ) -> Result<(Store, State), StoreError> {
        let entries = Arc::new(zk::Entries::new(client.clone(), url, dir.clone()));
        let where_ = PathBuf::from(format!("zk://{}{dir}", url.servers));
        let stored = entries.read().await?;
        let store = Store::new(Backend::Zk {
            entries,
            fenced: Arc::new(tokio::sync::Notify::new()),
        });
        let state = match stored {
            Some(stored) => store.adopt(&stored, &where_)?,
            // Nothing as entries: an earlier marathon-rs' one document, if any.
            None => match zk::Document::new(client, url, dir).read().await? {
                Some(bytes) => {
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: where_.clone(),
                        source,
                    })?
                }
                None => State::default(),
            },
        };
        Ok((store, state))
    }

    /// The state from stored entries, remembered as written.
    fn adopt(&self, stored: &BTreeMap<String, Vec<u8>>, at: &Path) -> Result<State, StoreError> {
        let state = State::from_entries(stored).map_err(|source| StoreError::Entries {
            path: at.to_path_buf(),
            source,
        })?;
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = stored.clone();
        Ok(state)
    }

    /// Resolves when another leader has written the state: this one must
    /// stop (never for a file).
    pub async fn fenced(&self) {
        match &self.backend {
            Backend::Dir(_) => std::future::pending().await,
            Backend::Zk { fenced, .. } => fenced.notified().await,
        }
    }

    /// The stored state, or an empty one when nothing was stored yet.
    pub fn load(&self) -> Result<State, StoreError> {
        let Backend::Dir(dir) = &self.backend else {
            unreachable!("a ZooKeeper store is loaded when it is opened");
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let mut stored = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".tmp") {
                continue;
            }
            stored.insert(name.to_string(), fs::read(&path).map_err(io(&path))?);
        }
        if !stored.is_empty() {
            return self.adopt(&stored, dir);
        }
        let legacy = dir.with_extension("json");
        match fs::read(&legacy) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: legacy.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StoreError::Io {
                path: legacy,
                source,
            }),
        }
    }

    /// Stores `entries` (a [`State::to_entries`]): writes those that
    /// changed since the last write and removes those that are gone.
    /// Never called with the state machine held: the driver hands the
    /// entries over and goes on (see [`crate::driver`]); one write at a
    /// time.
    pub async fn save(&self, entries: BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
        let changes: Vec<zk::Change> = {
            let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let mut changes: Vec<zk::Change> = entries
                .iter()
                .filter(|(k, v)| written.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            changes.extend(
                written
                    .keys()
                    .filter(|k| !entries.contains_key(*k))
                    .map(|k| (k.clone(), None)),
            );
            changes
        };
        match &self.backend {
            Backend::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || save_files(&dir, &changes))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: PathBuf::from("marathon-state"),
                        source: std::io::Error::other(e),
                    })??;
            }
            Backend::Zk { entries, fenced } => {
                let written = entries.write(&changes).await;
                if let Err(zk::ZkError::Fenced(url)) = &written {
                    error!(%url, "another marathon-rs leader wrote the state: stepping down");
                    fenced.notify_one();
                }
                written?;
            }
        }
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = entries;
        Ok(())
    }
}

/// Writes each changed entry's file (temporary, fsync, rename) and removes
/// those that are gone, then syncs the directory.
fn save_files(dir: &Path, changes: &[zk::Change]) -> Result<(), StoreError> {
    for (key, bytes) in changes {
        if !zk::valid_key(key) {
            return Err(StoreError::Io {
                path: dir.join("?"),
                source: std::io::Error::other(format!("'{key}' cannot name a file")),
            });
        }
        let path = dir.join(key);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        match bytes {
            Some(bytes) => {
                let tmp = dir.join(format!("{key}.tmp"));
                let mut f = fs::File::create(&tmp).map_err(io)?;
                f.write_all(bytes).map_err(io)?;
                f.sync_data().map_err(io)?;
                fs::rename(&tmp, &path).map_err(io)?;
            }
            None => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            },
        }
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_only_what_changed_and_loads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load().unwrap().apps.is_empty());
        let mut state = State {
            framework_id: Some("fw-1".into()),
            ..Default::default()
        };
        state.root_version = "2024-01-01T00:00:00.000Z".into();
        store.save(state.to_entries().unwrap()).await.unwrap();
        let meta = dir.path().join("marathon-state").join("meta");
        let written = fs::metadata(&meta).unwrap().modified().unwrap();
        // Nothing changed: nothing is written.
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.save(state.to_entries().unwrap()).await.unwrap();
        assert_eq!(fs::metadata(&meta).unwrap().modified().unwrap(), written);
        let reopened = Store::open(dir.path()).unwrap();
        let loaded = reopened.load().unwrap();
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-1"));
        fs::write(&meta, b"{\"groups\": 3}").unwrap();
        let err = reopened.load().unwrap_err().to_string();
        assert!(err.contains("entry 'meta'"), "{err}");
    }

    #[tokio::test]
    async fn an_earlier_one_document_state_is_read_and_rewritten_as_entries() {
        let dir = tempfile::tempdir().unwrap();
        let state = State {
            framework_id: Some("fw-old".into()),
            ..Default::default()
        };
        fs::write(
            dir.path().join("marathon-state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-old"));
        store.save(loaded.to_entries().unwrap()).await.unwrap();
        assert!(dir.path().join("marathon-state").join("meta").exists());
        fs::write(dir.path().join("marathon-state.json"), b"{\"apps\": 3}").unwrap();
        let again = Store::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(
            again.framework_id.as_deref(),
            Some("fw-old"),
            "entries win over the old document"
        );
    }
}
