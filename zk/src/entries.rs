//! A keyed store in ZooKeeper: one node per entry, so a change costs a
//! write of its own size, fenced against a deposed writer as
//! [`crate::Document`] is.
//!
//! ```text
//! <dir>/fence            empty; its version counts the commits. Every commit
//!                        sets it at the version this writer last saw, so a
//!                        writer that another has overtaken fails (fenced)
//! <dir>/entries/<key>    one entry's bytes (at most ZooKeeper's node size)
//! ```
//!
//! A write is one or more ZooKeeper transactions (`multi`), each at most
//! [`BATCH_BYTES`]: each is whole or absent, and each is fenced.

use std::collections::{BTreeMap, BTreeSet};

use zookeeper_client as zk;

use crate::{ZkError, ZkUrl};

/// The most bytes of entries in one transaction (ZooKeeper refuses
/// requests over its `jute.maxbuffer`, 1 MB by default).
pub const BATCH_BYTES: usize = 512 * 1024;
/// The most an entry may take.
pub const MAX_ENTRY: usize = 1000 * 1024;
/// Reads in flight at once.
const READS: usize = 64;

/// One change: a key and its new bytes, or None to remove it.
pub type Change = (String, Option<Vec<u8>>);

/// See the module documentation.
pub struct Entries {
    client: zk::Client,
    url: String,
    dir: String,
    secure: bool,
    state: tokio::sync::Mutex<Seen>,
}

/// What this writer last saw.
#[derive(Default)]
struct Seen {
    /// The fence's version (None: no fence yet).
    fence: Option<i32>,
    /// The keys stored.
    keys: BTreeSet<String>,
}

/// Whether `key` can be a node name: not empty, no `/`, not `.` or `..`,
/// printable. Callers escape what they store.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && key != ".."
        && key.len() <= 512
        && !key.contains('/')
        && !key.chars().any(char::is_control)
}

impl Entries {
    /// The store under `dir`, read and written over `client`'s session.
    pub fn new(client: zk::Client, url: &ZkUrl, dir: String) -> Entries {
        Entries {
            client,
            url: url.to_string(),
            secure: url.credentials.is_some(),
            dir,
            state: tokio::sync::Mutex::new(Seen::default()),
        }
    }

    fn err(&self, what: &'static str) -> impl Fn(zk::Error) -> ZkError + '_ {
        move |source| ZkError::Zk {
            url: self.url.clone(),
            what,
            source,
        }
    }

    fn fence_path(&self) -> String {
        format!("{}/fence", self.dir)
    }

    fn entry_path(&self, key: &str) -> String {
        format!("{}/entries/{key}", self.dir)
    }

    /// Every entry, or None when nothing was ever written here.
    pub async fn read(&self) -> Result<Option<BTreeMap<String, Vec<u8>>>, ZkError> {
        let mut seen = self.state.lock().await;
        let fence = match self.client.get_data(&self.fence_path()).await {
            Ok((_, stat)) => stat.version,
            Err(zk::Error::NoNode) => {
                *seen = Seen::default();
                return Ok(None);
            }
            Err(e) => return Err(self.err("cannot read the store's fence")(e)),
        };
        let keys = match self
            .client
            .list_children(&format!("{}/entries", self.dir))
            .await
        {
            Ok(keys) => keys,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(self.err("cannot list the store's entries")(e)),
        };
        let mut out = BTreeMap::new();
        for batch in keys.chunks(READS) {
            let reads = batch.iter().map(|k| {
                let path = self.entry_path(k);
                let client = &self.client;
                async move { (k, client.get_data(&path).await) }
            });
            for (key, result) in futures::future::join_all(reads).await {
                match result {
                    Ok((data, _)) => {
                        out.insert(key.clone(), data);
                    }
                    // Removed by a commit after the listing: not there.
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(self.err("cannot read an entry")(e)),
                }
            }
        }
        *seen = Seen {
            fence: Some(fence),
            keys: out.keys().cloned().collect(),
        };
        Ok(Some(out))
    }

    /// Applies `changes` (in batches of at most [`BATCH_BYTES`]). Fails
    /// with [`ZkError::Fenced`] when another writer committed since this
    /// one last read or wrote.
    pub async fn write(&self, changes: &[Change]) -> Result<(), ZkError> {
        let mut seen = self.state.lock().await;
        for (key, bytes) in changes {
            if !valid_key(key) {
                return Err(ZkError::Corrupt(
                    self.url.clone(),
                    format!("'{key}' cannot name a ZooKeeper node"),
                ));
            }
            if bytes.as_ref().is_some_and(|b| b.len() > MAX_ENTRY) {
                return Err(ZkError::Corrupt(
                    self.url.clone(),
                    format!("entry '{key}' is bigger than ZooKeeper's node limit"),
                ));
            }
        }
        let persistent = zk::CreateMode::Persistent.with_acls(if self.secure {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        });
        if seen.fence.is_none() {
            self.client
                .mkdir(&format!("{}/entries", self.dir), &persistent)
                .await
                .map_err(self.err("cannot create the store's directory"))?;
        }
        if changes.is_empty() {
            // Nothing to change; a first write still makes the store.
            if seen.fence.is_none() {
                self.commit(&mut seen, &[], &persistent).await?;
            }
            return Ok(());
        }
        let mut start = 0;
        while start < changes.len() {
            let mut end = start;
            let mut size = 0;
            while end < changes.len() && (end == start || size < BATCH_BYTES) {
                size += changes[end].0.len() + changes[end].1.as_ref().map_or(0, Vec::len);
                end += 1;
            }
            self.commit(&mut seen, &changes[start..end], &persistent)
                .await?;
            start = end;
        }
        Ok(())
    }

    async fn commit(
        &self,
        seen: &mut Seen,
        batch: &[Change],
        persistent: &zk::CreateOptions<'_>,
    ) -> Result<(), ZkError> {
        let fence = self.fence_path();
        let mut multi = self.client.new_multi_writer();
        let op = self.err("cannot build a transaction");
        match seen.fence {
            Some(v) => multi.add_set_data(&fence, b"", Some(v)).map_err(&op)?,
            None => multi.add_create(&fence, b"", persistent).map_err(&op)?,
        }
        for (key, bytes) in batch {
            let path = self.entry_path(key);
            match (bytes, seen.keys.contains(key)) {
                (Some(b), true) => multi.add_set_data(&path, b, None).map_err(&op)?,
                (Some(b), false) => multi.add_create(&path, b, persistent).map_err(&op)?,
                (None, true) => multi.add_delete(&path, None).map_err(&op)?,
                (None, false) => {}
            }
        }
        let results = multi.commit().await.map_err(|e| match e {
            zk::MultiWriteError::OperationFailed {
                index: 0,
                source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
            } => ZkError::Fenced(self.url.clone()),
            zk::MultiWriteError::OperationFailed { source, .. }
            | zk::MultiWriteError::RequestFailed { source } => {
                self.err("cannot commit to the store")(source)
            }
        })?;
        seen.fence = Some(match results.first() {
            Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
            _ => 0,
        });
        for (key, bytes) in batch {
            if bytes.is_some() {
                seen.keys.insert(key.clone());
            } else {
                seen.keys.remove(key);
            }
        }
        Ok(())
    }
}
