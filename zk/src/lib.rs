//! ZooKeeper for Agora: leader election and detection in Mesos' layout
//! (`<path>/json.info_NNNNNNNNNN` records holding MasterInfo as JSON), so
//! Mesos tools find Agora's leading master and Agora finds theirs; Curator's
//! leader latch for marathon-rs; and fenced documents ([`Document`]) for the
//! registry and marathon-rs' state.
//!
//! Every contending master holds an ephemeral sequential
//! `<path>/json.info_NNNNNNNNNN` with its MasterInfo as JSON; the member with
//! the smallest sequence leads. [`detect`] follows the leader for agents,
//! frameworks and `agora dns`; [`contend`] is a master's candidacy.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};
use zookeeper_client as zk;

/// The ZooKeeper client crate, for sessions shared with [`Candidacy::client`].
pub use zookeeper_client;

mod entries;
pub use entries::{Change, Entries, valid_key};

/// The name prefix of a member's node (Mesos ≥ 0.24).
pub const MEMBER_PREFIX: &str = "json.info_";

/// A ZooKeeper master URL: `zk://[user:pass@]host:port[,host:port…]/path`.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port`.
    pub servers: String,
    /// The znode directory of the election, e.g. `/mesos`.
    pub path: String,
    /// `user:pass` for ZooKeeper's digest scheme.
    pub credentials: Option<String>,
}

impl fmt::Debug for ZkUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ZkUrl {
    /// The URL without its credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "zk://{}{}", self.servers, self.path)
    }
}

/// Whether a `--master` value names ZooKeeper rather than a master.
pub fn is_zk(master: &str) -> bool {
    let m = master.trim();
    m.starts_with("zk://") || m.starts_with("zoo://")
}

impl FromStr for ZkUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<ZkUrl, String> {
        let s = s.trim();
        let rest = s
            .strip_prefix("zk://")
            .or_else(|| s.strip_prefix("zoo://"))
            .ok_or_else(|| format!("'{s}' does not start with zk://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(format!("'{s}' has no path (e.g. zk://host:2181/mesos)")),
        };
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) if c.contains(':') => (Some(c.to_string()), h),
            Some(_) => return Err(format!("'{s}': credentials must be user:password")),
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(format!("'{s}' names no ZooKeeper server"));
        }
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| format!("'{host}' in '{s}' is not host:port"))?;
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
            if !valid_name || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("'{host}' in '{s}' is not host:port"));
            }
        }
        let path = path.trim_end_matches('/');
        let valid_path = !path.is_empty()
            && path[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg != "zookeeper"
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            });
        if !valid_path {
            return Err(format!(
                "'{s}': the path must be /name[/name…] of letters, digits, '.', '_' and '-'"
            ));
        }
        Ok(ZkUrl {
            servers: hosts.to_string(),
            path: path.to_string(),
            credentials,
        })
    }
}

/// What can go wrong with ZooKeeper.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// ZooKeeper answered with an error, or could not be reached.
    #[error("ZooKeeper {url}: {what}: {source}")]
    Zk {
        /// Where.
        url: String,
        /// Doing what.
        what: &'static str,
        /// The client's error.
        source: zk::Error,
    },
    /// The session ended: leadership (if any) is gone.
    #[error("ZooKeeper {0}: the session ended ({1})")]
    SessionLost(String, String),
    /// Someone else wrote the document since this writer last did: this
    /// writer is no longer the leader.
    #[error("ZooKeeper {0}: another writer replaced the document")]
    Fenced(String),
    /// The stored document is not whole.
    #[error("ZooKeeper {0}: {1}")]
    Corrupt(String, String),
}

/// The sequence of an election member's node name: `json.info_0000000003`,
/// the older `info_0000000003`, or a bare `0000000003`. Other children
/// (`log_replicas`, …) are not members.
pub fn member_sequence(name: &str) -> Option<u64> {
    let digits = name.rsplit_once('_').map_or(name, |(_, d)| d);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The leading master, as its ZooKeeper record names it.
#[derive(Clone, Debug, PartialEq)]
pub struct Leader {
    /// `ip:port` (from `address`, else `pid`).
    pub address: String,
    /// The whole MasterInfo JSON.
    pub info: serde_json::Value,
}

/// The `ip:port` a MasterInfo JSON record names: `address.ip` and
/// `address.port` (what pymesos reads), else the `pid`'s `host:port`.
pub fn record_address(info: &serde_json::Value) -> Option<String> {
    let addr = &info["address"];
    if let (Some(ip), Some(port)) = (addr["ip"].as_str(), addr["port"].as_u64()) {
        return Some(format!("{ip}:{port}"));
    }
    let pid = info["pid"].as_str()?;
    let (_, hostport) = pid.split_once('@')?;
    Some(hostport.to_string())
}

/// An election's layout: where its members are and how they are named.
#[derive(Clone, Debug)]
pub struct Election {
    /// The ZooKeeper servers and root path.
    pub url: ZkUrl,
    /// The znode directory of the members.
    pub dir: String,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Mesos masters: `json.info_NNNNNNNNNN` holding MasterInfo JSON.
    Mesos,
    /// Marathon: Curator LeaderLatch nodes `_c_<uuid>-latch-NNNNNNNNNN`
    /// under `<root>/leader-curator`, holding `host:port`.
    Marathon,
}

impl Election {
    /// Mesos masters' election under the URL's path.
    pub fn mesos(url: ZkUrl) -> Election {
        Election {
            dir: url.path.clone(),
            url,
            kind: Kind::Mesos,
        }
    }

    /// Marathon's leader latch under `<path>/leader-curator`.
    pub fn marathon(url: ZkUrl) -> Election {
        Election {
            dir: format!("{}/leader-curator", url.path),
            url,
            kind: Kind::Marathon,
        }
    }

    /// A member's sequence, or None for a child that is not a member.
    fn sequence(&self, name: &str) -> Option<u64> {
        match self.kind {
            Kind::Mesos => member_sequence(name),
            Kind::Marathon => {
                let (_, digits) = name.rsplit_once("-latch-")?;
                digits.parse().ok()
            }
        }
    }

    /// The leading member among `children`: the smallest sequence.
    fn leading<'a>(&self, children: &'a [String]) -> Option<(&'a str, u64)> {
        children
            .iter()
            .filter_map(|c| self.sequence(c).map(|s| (c.as_str(), s)))
            .min_by_key(|&(_, s)| s)
    }

    /// The leader a member's data names.
    fn leader(&self, data: &[u8]) -> Option<Leader> {
        let (address, info) = match self.kind {
            Kind::Mesos => {
                let info: serde_json::Value = serde_json::from_slice(data).ok()?;
                (record_address(&info)?, info)
            }
            Kind::Marathon => {
                let address = std::str::from_utf8(data).ok()?.trim().to_string();
                if address.is_empty() {
                    return None;
                }
                (address, serde_json::Value::Null)
            }
        };
        Some(Leader { address, info })
    }

    /// The name prefix of a new member's node.
    fn member_prefix(&self) -> String {
        match self.kind {
            Kind::Mesos => MEMBER_PREFIX.to_string(),
            Kind::Marathon => format!("_c_{}-latch-", uuid::Uuid::new_v4()),
        }
    }
}

async fn connect(url: &ZkUrl, session_timeout: Duration) -> Result<zk::Client, ZkError> {
    let err = |what, source| ZkError::Zk {
        url: url.to_string(),
        what,
        source,
    };
    let mut connector = zk::Client::connector().with_session_timeout(session_timeout);
    if let Some(c) = &url.credentials {
        connector = connector.with_auth("digest", c.as_bytes());
    }
    connector
        .connect(&url.servers)
        .await
        .map_err(|e| err("cannot connect", e))
}

fn acls(url: &ZkUrl) -> zk::Acls<'static> {
    if url.credentials.is_some() {
        zk::Acls::creator_all()
    } else {
        zk::Acls::anyone_all()
    }
}

/// Reads the current leader once (None when no member contends).
async fn read_leader(
    client: &zk::Client,
    election: &Election,
) -> Result<(Option<Leader>, zk::OneshotWatcher), zk::Error> {
    let dir = &election.dir;
    loop {
        let (children, watcher) = match client.list_and_watch_children(dir).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => {
                // No member has created the directory yet: watch for it. If
                // it appeared since, its data watch would never tell of a
                // member joining: list it again instead.
                let (stat, watcher) = client.check_and_watch_stat(dir).await?;
                if stat.is_some() {
                    continue;
                }
                return Ok((None, watcher));
            }
            Err(e) => return Err(e),
        };
        let Some((name, _)) = election.leading(&children) else {
            return Ok((None, watcher));
        };
        match client.get_data(&format!("{dir}/{name}")).await {
            Ok((data, _)) => {
                let leader = election.leader(&data);
                if leader.is_none() {
                    warn!(%dir, node = name, "the leader's record names no address");
                }
                return Ok((leader, watcher));
            }
            // It went between the two reads: look again.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Follows the leading master under `url` (Mesos' layout).
pub fn detect(url: ZkUrl) -> watch::Receiver<Option<Leader>> {
    detect_in(Election::mesos(url))
}

/// Follows the leader of `election`. The receiver holds the current leader
/// (None while there is none or ZooKeeper cannot be reached); the follower
/// task ends when every receiver is gone.
pub fn detect_in(election: Election) -> watch::Receiver<Option<Leader>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let url = election.url.clone();
        let mut backoff = Duration::from_millis(100);
        while !tx.is_closed() {
            let client = match connect(&url, Duration::from_secs(10)).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "ZooKeeper unreachable; retrying");
                    tx.send_if_modified(|l| l.take().is_some());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            loop {
                match read_leader(&client, &election).await {
                    Ok((leader, watcher)) => {
                        tx.send_if_modified(|l| {
                            let changed = *l != leader;
                            if changed {
                                info!(dir = %election.dir, leader = ?leader.as_ref().map(|l| &l.address), "leader");
                                *l = leader;
                            }
                            changed
                        });
                        tokio::select! {
                            _ = watcher.changed() => {}
                            () = tx.closed() => return,
                        }
                    }
                    Err(e) => {
                        debug!(%url, error = %e, "lost ZooKeeper; reconnecting");
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Waits up to `timeout` for a leader under `url`, and returns its address.
pub async fn current_leader(
    rx: &mut watch::Receiver<Option<Leader>>,
    timeout: Duration,
) -> Option<Leader> {
    tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
        .await
        .ok()?
        .ok()
        .map(|l| l.clone())?
}

/// A master's candidacy: its member node, and the session holding it.
pub struct Candidacy {
    client: zk::Client,
    election: Election,
    node: String,
    sequence: u64,
    session_timeout: Duration,
}

/// Joins the Mesos masters' election under `url` with `record`
/// (MasterInfo JSON) as the member's data.
pub async fn contend(
    url: &ZkUrl,
    record: &[u8],
    session_timeout: Duration,
) -> Result<Candidacy, ZkError> {
    contend_in(Election::mesos(url.clone()), record, session_timeout).await
}

/// Joins `election` with `data` as the member's data, creating the
/// directory if it is missing.
pub async fn contend_in(
    election: Election,
    data: &[u8],
    session_timeout: Duration,
) -> Result<Candidacy, ZkError> {
    let url = &election.url;
    let client = connect(url, session_timeout).await?;
    let err = |what, source| ZkError::Zk {
        url: url.to_string(),
        what,
        source,
    };
    let dir = zk::CreateMode::Persistent.with_acls(acls(url));
    client
        .mkdir(&election.dir, &dir)
        .await
        .map_err(|e| err("cannot create the election path", e))?;
    let name_prefix = election.member_prefix();
    let member = zk::CreateMode::EphemeralSequential.with_acls(acls(url));
    let (_, sequence) = client
        .create(&format!("{}/{name_prefix}", election.dir), data, &member)
        .await
        .map_err(|e| err("cannot join the election", e))?;
    let sequence = u64::try_from(sequence.into_i64()).unwrap_or(0);
    let node = format!("{name_prefix}{sequence:010}");
    info!(%url, %node, "contending for leadership");
    Ok(Candidacy {
        client,
        election,
        node,
        sequence,
        session_timeout,
    })
}

impl Candidacy {
    /// This member's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The session holding the candidacy (for writes fenced by it).
    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    /// Leaves the election: the member node goes at once, so the next
    /// member leads without waiting for the session to expire.
    pub async fn resign(self) {
        let path = format!("{}/{}", self.election.dir, self.node);
        match self.client.delete(&path, None).await {
            Ok(()) => info!(node = %self.node, "resigned"),
            Err(e) => {
                warn!(node = %self.node, error = %e, "cannot resign; the session's end will do")
            }
        }
    }

    /// Waits until this member leads; returns the leadership epoch
    /// (its sequence + 1, so every leadership's epoch is larger than the
    /// previous one's).
    pub async fn elected(&mut self) -> Result<u64, ZkError> {
        let err = |what, source| ZkError::Zk {
            url: self.election.url.to_string(),
            what,
            source,
        };
        loop {
            let (children, watcher) = match self
                .client
                .list_and_watch_children(&self.election.dir)
                .await
            {
                Ok(r) => r,
                // A connection that dropped may come back within the
                // session: wait for it, unless the session is lost.
                Err(zk::Error::ConnectionLoss | zk::Error::Timeout) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        e = self.lost() => return Err(e),
                    }
                }
                Err(e) => return Err(err("cannot list the members", e)),
            };
            if !children.contains(&self.node) {
                return Err(ZkError::SessionLost(
                    self.election.url.to_string(),
                    format!("member {} is gone", self.node),
                ));
            }
            if self
                .election
                .leading(&children)
                .is_some_and(|(n, _)| n == self.node)
            {
                info!(dir = %self.election.dir, node = %self.node, "elected leader");
                return Ok(self.sequence + 1);
            }
            tokio::select! {
                _ = watcher.changed() => {}
                e = self.lost() => return Err(e),
            }
        }
    }

    /// Resolves when leadership can no longer be trusted: the session
    /// expired or was closed, or ZooKeeper has been unreachable for a
    /// quarter of the session timeout.
    ///
    /// Why a quarter: the server expires the session (and another member
    /// leads) a whole timeout T after it last heard from this one. The
    /// client says Disconnected at most 2/5 T + T/20 after it last heard
    /// from the server (zookeeper-client's connection timeout and tick), so
    /// a leader that gives up T/4 later has stopped by 0.7 T, before any
    /// successor can start. A reconnect within that quarter (another server
    /// of the ensemble taking over) keeps the leadership.
    pub async fn lost(&self) -> ZkError {
        let mut state = self.client.state_watcher();
        // The server may have negotiated a shorter timeout than asked.
        let timeout = self.session_timeout.min(self.client.session_timeout());
        let grace = timeout / 4;
        loop {
            let now = state.state();
            let lost = |why: String| ZkError::SessionLost(self.election.url.to_string(), why);
            match now {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    state.changed().await;
                }
                zk::SessionState::Disconnected => {
                    match tokio::time::timeout(grace, state.changed()).await {
                        Ok(_) => {}
                        Err(_) => {
                            return lost(format!(
                                "disconnected for a quarter of the session timeout ({grace:?} of {timeout:?})"
                            ));
                        }
                    }
                }
                s if s.is_terminated() => return lost(format!("{s:?}")),
                _ => {
                    state.changed().await;
                }
            }
        }
    }
}

/// A node's data and version (None: no such node), read after a `sync` so
/// that the server reached has caught up with the leader.
pub(crate) async fn read_synced(
    client: &zk::Client,
    node: &str,
) -> Result<Option<(Vec<u8>, i32)>, zk::Error> {
    client.sync(node).await?;
    match client.get_data(node).await {
        Ok((data, stat)) => Ok(Some((data, stat.version))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Chunks of a [`Document`] stay under ZooKeeper's 1 MB node limit.
const CHUNK: usize = 512 * 1024;

/// A document of any size kept in ZooKeeper under `dir`: chunks
/// `chunks/<generation>-<i>`, and `current` naming the generation, the
/// chunk count and the length. A write adds the new chunks, then swaps
/// `current` (one atomic set, conditional on the version this writer last
/// saw, so a deposed leader cannot overwrite its successor), then deletes
/// the old chunks: a reader sees the old or the new document whole.
pub struct Document {
    client: zk::Client,
    dir: String,
    url: String,
    /// With credentials, nodes only their creator may touch.
    secure: bool,
    /// `current`'s version as this writer last saw it (None: not there).
    version: tokio::sync::Mutex<Option<i32>>,
}

impl Document {
    /// The document under `dir`, read and written over `client`'s session.
    pub fn new(client: zk::Client, url: &ZkUrl, dir: String) -> Document {
        Document {
            client,
            url: url.to_string(),
            secure: url.credentials.is_some(),
            dir,
            version: tokio::sync::Mutex::new(None),
        }
    }

    fn err(&self, what: &'static str) -> impl Fn(zk::Error) -> ZkError + '_ {
        move |source| ZkError::Zk {
            url: self.url.clone(),
            what,
            source,
        }
    }

    /// The stored bytes (None when nothing was ever written).
    pub async fn read(&self) -> Result<Option<Vec<u8>>, ZkError> {
        let mut version = self.version.lock().await;
        let (pointer, stat) = match self.client.get_data(&format!("{}/current", self.dir)).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => {
                *version = None;
                return Ok(None);
            }
            Err(e) => return Err(self.err("cannot read the document")(e)),
        };
        let corrupt = |why: String| ZkError::Corrupt(self.url.clone(), why);
        let text = String::from_utf8_lossy(&pointer).into_owned();
        let fields: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let [generation, count, len] = fields[..] else {
            return Err(corrupt(format!("{}/current holds '{text}'", self.dir)));
        };
        // A corrupt pointer must not make us reserve absurd amounts.
        let mut bytes = Vec::with_capacity(len.min(64 << 20) as usize);
        if count > len.div_ceil(CHUNK as u64) + 1 {
            return Err(corrupt(format!("{count} chunks for {len} bytes")));
        }
        for i in 0..count {
            let path = format!("{}/chunks/{generation}-{i}", self.dir);
            let (chunk, _) = self
                .client
                .get_data(&path)
                .await
                .map_err(|e| corrupt(format!("{path}: {e}")))?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != len {
            return Err(corrupt(format!(
                "{} bytes stored, {len} expected",
                bytes.len()
            )));
        }
        *version = Some(stat.version);
        Ok(Some(bytes))
    }

    /// Replaces the document with `bytes`.
    pub async fn write(&self, bytes: &[u8]) -> Result<(), ZkError> {
        let mut version = self.version.lock().await;
        let persistent = zk::CreateMode::Persistent.with_acls(if self.secure {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        });
        let chunks_dir = format!("{}/chunks", self.dir);
        self.client
            .mkdir(&chunks_dir, &persistent)
            .await
            .map_err(self.err("cannot create the document's directory"))?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            Vec::new()
        } else {
            bytes.chunks(CHUNK).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            self.client
                .create(
                    &format!("{chunks_dir}/{generation}-{i}"),
                    chunk,
                    &persistent,
                )
                .await
                .map_err(self.err("cannot write a chunk"))?;
        }
        let pointer = format!("{generation} {} {}", chunks.len(), bytes.len());
        let current = format!("{}/current", self.dir);
        let switched = match *version {
            Some(v) => self
                .client
                .set_data(&current, pointer.as_bytes(), Some(v))
                .await
                .map_err(|e| match e {
                    zk::Error::BadVersion | zk::Error::NoNode => ZkError::Fenced(self.url.clone()),
                    e => self.err("cannot switch the document")(e),
                }),
            None => self
                .client
                .create(&current, pointer.as_bytes(), &persistent)
                .await
                .map_err(|e| match e {
                    zk::Error::NodeExists => ZkError::Fenced(self.url.clone()),
                    e => self.err("cannot switch the document")(e),
                })
                .map(|(stat, _)| stat),
        };
        // An answer lost with the connection: the switch may have gone
        // through. The pointer names this write's generation, so finding it
        // in `current` says it did (else a later write would take this one
        // for another writer's and call itself fenced).
        let switched = match switched {
            Err(ZkError::Zk {
                source: zk::Error::ConnectionLoss,
                ..
            }) => match read_synced(&self.client, &current).await {
                Ok(found) => {
                    let found = found.as_ref().map(|(d, v)| (d.as_slice(), *v));
                    match entries::outcome(*version, pointer.as_bytes(), found) {
                        entries::Outcome::Applied => Ok(found.map_or(0, |(_, v)| v)),
                        entries::Outcome::Absent => Err(self.err("cannot switch the document")(
                            zk::Error::ConnectionLoss,
                        )),
                        entries::Outcome::Overtaken => Err(ZkError::Fenced(self.url.clone())),
                    }
                }
                Err(e) => Err(self.err("cannot read the document's pointer")(e)),
            },
            other => other.map(|stat| stat.version),
        };
        let switched_version = match switched {
            Ok(v) => v,
            Err(e) => {
                // Not switched: the new chunks are nobody's.
                for i in 0..chunks.len() {
                    let _ = self
                        .client
                        .delete(&format!("{chunks_dir}/{generation}-{i}"), None)
                        .await;
                }
                return Err(e);
            }
        };
        *version = Some(switched_version);
        // The old generations' chunks (and any a crash left behind).
        let keep = format!("{generation}-");
        if let Ok(children) = self.client.list_children(&chunks_dir).await {
            for old in children.iter().filter(|c| !c.starts_with(&keep)) {
                if let Err(e) = self
                    .client
                    .delete(&format!("{chunks_dir}/{old}"), None)
                    .await
                {
                    debug!(chunk = %old, error = %e, "cannot delete an old chunk");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zk_urls_parse_as_mesos_writes_them() {
        let u: ZkUrl = "zk://h1:2181,h2:2182/mesos".parse().unwrap();
        assert_eq!(u.servers, "h1:2181,h2:2182");
        assert_eq!(u.path, "/mesos");
        assert_eq!(u.credentials, None);
        let u: ZkUrl = "zk://user:secret@127.0.0.1:2181/a/b/".parse().unwrap();
        assert_eq!(u.path, "/a/b");
        assert_eq!(u.credentials.as_deref(), Some("user:secret"));
        assert_eq!(
            u.to_string(),
            "zk://127.0.0.1:2181/a/b",
            "no credentials shown"
        );
        for bad in [
            "http://h:2181/mesos",
            "zk://h:2181",
            "zk:///mesos",
            "zk://h/mesos",
            "zk://h:0/mesos",
            "zk://h:99999/mesos",
            "zk://h:2181/",
            "zk://h:2181/a//b",
            "zk://h:2181/a/../b",
            "zk://h:2181/zookeeper",
            "zk://user@h:2181/mesos",
            "zk://h:2181/me sos",
        ] {
            assert!(bad.parse::<ZkUrl>().is_err(), "{bad}");
        }
        assert!(is_zk(" zk://h:1/m") && is_zk("zoo://h:1/m") && !is_zk("h:5050"));
    }

    #[test]
    fn the_smallest_member_sequence_leads_and_other_children_are_skipped() {
        let children: Vec<String> = [
            "json.info_0000000007",
            "log_replicas",
            "info_0000000005",
            "json.info_0000000009",
            "0000000006",
            "json.info_x",
        ]
        .map(String::from)
        .to_vec();
        let mesos = Election::mesos("zk://h:1/mesos".parse().unwrap());
        assert_eq!(mesos.leading(&children), Some(("info_0000000005", 5)));
        assert_eq!(member_sequence("log_replicas"), None);
        assert_eq!(mesos.leading(&["log_replicas".to_string()]), None);
    }

    #[test]
    fn marathon_latch_members_are_ordered_by_their_sequence() {
        let e = Election::marathon("zk://h:1/marathon".parse().unwrap());
        assert_eq!(e.dir, "/marathon/leader-curator");
        let children: Vec<String> = [
            "_c_7d2b-latch-0000000004",
            "_c_9a11-latch-0000000002",
            "stray",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(e.leading(&children), Some(("_c_9a11-latch-0000000002", 2)));
        let leader = e.leader(b"10.0.0.3:8080").unwrap();
        assert_eq!(leader.address, "10.0.0.3:8080");
        assert!(e.leader(b"").is_none());
        assert!(e.member_prefix().starts_with("_c_") && e.member_prefix().ends_with("-latch-"));
    }

    #[test]
    fn a_record_names_its_master_by_address_or_pid() {
        let full = serde_json::json!({"address": {"ip": "10.0.0.1", "port": 5050},
                                      "pid": "master@10.0.0.2:5051"});
        assert_eq!(record_address(&full).as_deref(), Some("10.0.0.1:5050"));
        let pid_only = serde_json::json!({"pid": "master@10.0.0.2:5051"});
        assert_eq!(record_address(&pid_only).as_deref(), Some("10.0.0.2:5051"));
        assert_eq!(record_address(&serde_json::json!({"id": "x"})), None);
    }
}
