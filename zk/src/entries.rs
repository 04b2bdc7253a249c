//! A keyed store in ZooKeeper: one node per entry, so a change costs a
//! write of its own size, fenced against a deposed writer as
//! [`crate::Document`] is.
//!
//! ```text
//! <dir>/fence            its version counts the commits. Every commit sets
//!                        it at the version this writer last saw, so a writer
//!                        that another has overtaken fails (fenced); its data
//!                        is the last commit's token
//! <dir>/entries/<key>    one entry's bytes (at most ZooKeeper's node size)
//! ```
//!
//! A write is one or more ZooKeeper transactions (`multi`), each at most
//! [`BATCH_BYTES`]: each is whole or absent, and each is fenced.
//!
//! A transaction whose answer was lost with the connection (a server of the
//! ensemble died) may have been applied or not. Its token tells: the fence
//! is read back (after a `sync`, so a lagging server cannot answer from
//! before it) before anything else is written. Without this, a leader whose
//! commit had gone through would take its own commit for another writer's
//! and step down.

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
    /// A commit whose outcome is not known yet: its token and changes.
    unsure: Option<(Vec<u8>, Vec<Change>)>,
}

/// What became of a commit whose answer was lost.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// It went through: the fence carries its token.
    Applied,
    /// Nothing was committed since: the fence is as this writer saw it.
    Absent,
    /// Another writer committed.
    Overtaken,
}

/// Judges a lost commit by the fence read back (`None`: no fence node).
pub(crate) fn outcome(seen: Option<i32>, token: &[u8], fence: Option<(&[u8], i32)>) -> Outcome {
    match fence {
        Some((data, _)) if data == token => Outcome::Applied,
        Some((_, version)) if Some(version) == seen => Outcome::Absent,
        None if seen.is_none() => Outcome::Absent,
        _ => Outcome::Overtaken,
    }
}

impl Seen {
    /// Records a commit of `batch` that left the fence at `version`.
    fn committed(&mut self, version: i32, batch: &[Change]) {
        self.fence = Some(version);
        for (key, bytes) in batch {
            if bytes.is_some() {
                self.keys.insert(key.clone());
            } else {
                self.keys.remove(key);
            }
        }
    }
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
            unsure: None,
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

    /// Finds out what became of a commit whose answer was lost, if any:
    /// records it when it went through, fails (fenced) when another writer
    /// committed since, and keeps it unsure while ZooKeeper cannot say.
    async fn settle(&self, seen: &mut Seen) -> Result<Option<Outcome>, ZkError> {
        let Some((token, batch)) = seen.unsure.take() else {
            return Ok(None);
        };
        let fence = self.fence_path();
        // Requests wait while the client reconnects.
        let found = match crate::read_synced(&self.client, &fence).await {
            Ok(found) => found,
            Err(e) => {
                seen.unsure = Some((token, batch));
                return Err(self.err("cannot read the store's fence")(e));
            }
        };
        let judged = outcome(
            seen.fence,
            &token,
            found.as_ref().map(|(d, v)| (d.as_slice(), *v)),
        );
        match judged {
            Outcome::Applied => {
                let version = found.map_or(0, |(_, v)| v);
                seen.committed(version, &batch);
            }
            Outcome::Absent => {}
            Outcome::Overtaken => return Err(ZkError::Fenced(self.url.clone())),
        }
        Ok(Some(judged))
    }

    async fn commit(
        &self,
        seen: &mut Seen,
        batch: &[Change],
        persistent: &zk::CreateOptions<'_>,
    ) -> Result<(), ZkError> {
        self.settle(seen).await?;
        let fence = self.fence_path();
        let token = uuid::Uuid::new_v4().simple().to_string().into_bytes();
        let mut multi = self.client.new_multi_writer();
        let op = self.err("cannot build a transaction");
        match seen.fence {
            Some(v) => multi.add_set_data(&fence, &token, Some(v)).map_err(&op)?,
            None => multi.add_create(&fence, &token, persistent).map_err(&op)?,
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
        let results = match multi.commit().await {
            Ok(results) => results,
            Err(zk::MultiWriteError::RequestFailed {
                source: zk::Error::ConnectionLoss,
            }) => {
                // Applied or not: the next commit (or this one's retry)
                // finds out first.
                seen.unsure = Some((token, batch.to_vec()));
                return match self.settle(seen).await? {
                    Some(Outcome::Applied) => Ok(()),
                    _ => Err(self.err("cannot commit to the store")(
                        zk::Error::ConnectionLoss,
                    )),
                };
            }
            Err(zk::MultiWriteError::OperationFailed {
                index: 0,
                source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
            }) => return Err(ZkError::Fenced(self.url.clone())),
            Err(
                zk::MultiWriteError::OperationFailed { source, .. }
                | zk::MultiWriteError::RequestFailed { source },
            ) => return Err(self.err("cannot commit to the store")(source)),
        };
        let version = match results.first() {
            Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
            _ => 0,
        };
        seen.committed(version, batch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Change, Outcome, Seen, outcome};

    #[test]
    fn a_lost_commit_is_judged_by_the_token_on_the_fence() {
        let token = b"t2".as_slice();
        // The fence carries this commit's token: it went through.
        assert_eq!(outcome(Some(4), token, Some((token, 5))), Outcome::Applied);
        assert_eq!(outcome(None, token, Some((token, 0))), Outcome::Applied);
        // Unchanged since this writer saw it: nothing was committed.
        assert_eq!(outcome(Some(4), token, Some((b"t1", 4))), Outcome::Absent);
        assert_eq!(outcome(None, token, None), Outcome::Absent);
        // Another writer's token, or a fence made or removed by another.
        assert_eq!(outcome(Some(4), token, Some((b"x", 5))), Outcome::Overtaken);
        assert_eq!(outcome(None, token, Some((b"x", 0))), Outcome::Overtaken);
        assert_eq!(outcome(Some(4), token, None), Outcome::Overtaken);
    }

    #[test]
    fn a_commit_found_applied_is_recorded_as_its_own() {
        let mut seen = Seen {
            fence: Some(1),
            keys: ["a".to_string(), "b".to_string()].into(),
            unsure: None,
        };
        let batch: Vec<Change> = vec![("a".into(), None), ("c".into(), Some(b"1".to_vec()))];
        seen.committed(2, &batch);
        assert_eq!(seen.fence, Some(2));
        assert_eq!(
            seen.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }
}
