//! The embedded store: marathon-rs' whole state as one JSON document in the
//! work dir, replaced atomically (write to a temporary file, fsync, rename).
//! A crash leaves either the old or the new document, never half of one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use agora_marathon_core::marathon::State;

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
    /// The document is not a marathon-rs state.
    #[error("{path} is not a valid marathon-rs state: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The state file in a work dir.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `work_dir` (created if missing).
    pub fn open(work_dir: &Path) -> Result<Store, StoreError> {
        fs::create_dir_all(work_dir).map_err(|source| StoreError::Io {
            path: work_dir.to_path_buf(),
            source,
        })?;
        Ok(Store {
            path: work_dir.join("marathon-state.json"),
        })
    }

    /// The stored state, or an empty one when nothing was stored yet.
    pub fn load(&self) -> Result<State, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the stored state.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(state).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.load().unwrap().apps.is_empty());
        let mut state = State {
            framework_id: Some("fw-1".into()),
            ..Default::default()
        };
        state.root_version = "2024-01-01T00:00:00.000Z".into();
        store.save(&state).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.framework_id.as_deref(), Some("fw-1"));
        fs::write(dir.path().join("marathon-state.json"), b"{\"apps\": 3}").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("not a valid marathon-rs state"), "{err}");
    }
}
