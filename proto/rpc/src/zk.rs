//! Leader election and detection in ZooKeeper, in Mesos' layout
//! (`shared/specs/mesos-v1-http-api.md` §6), so Mesos tools find Agora's
//! leading master and Agora finds theirs.
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

/// The leading member among `children`: the smallest sequence.
pub fn leading_member(children: &[String]) -> Option<(&str, u64)> {
    children
        .iter()
        .filter_map(|c| member_sequence(c).map(|s| (c.as_str(), s)))
        .min_by_key(|&(_, s)| s)
}

/// The leading master, as its ZooKeeper record names it.
#[derive(Clone, Debug, PartialEq)]
pub struct Leader {
    /// `ip:port` (from `address`, else `pid`).
    pub address: String,
    /// Its sequence: the leadership epoch is this + 1.
    pub sequence: u64,
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

/// Reads the current leader once (None when no master contends).
async fn read_leader(
    client: &zk::Client,
    url: &ZkUrl,
) -> Result<(Option<Leader>, zk::OneshotWatcher), zk::Error> {
    loop {
        let (children, watcher) = match client.list_and_watch_children(&url.path).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => {
                // No master has created the path yet: watch for it.
                let (_, watcher) = client.check_and_watch_stat(&url.path).await?;
                return Ok((None, watcher));
            }
            Err(e) => return Err(e),
        };
        let Some((name, sequence)) = leading_member(&children) else {
            return Ok((None, watcher));
        };
        match client.get_data(&format!("{}/{name}", url.path)).await {
            Ok((data, _)) => {
                let info: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                let leader = record_address(&info).map(|address| Leader {
                    address,
                    sequence,
                    info,
                });
                if leader.is_none() {
                    warn!(%url, node = name, "the leader's record names no address");
                }
                return Ok((leader, watcher));
            }
            // It went between the two reads: look again.
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Follows the leading master under `url`. The receiver holds the current
/// leader (None while there is none or ZooKeeper cannot be reached); the
/// follower task ends when every receiver is gone.
pub fn detect(url: ZkUrl) -> watch::Receiver<Option<Leader>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
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
                match read_leader(&client, &url).await {
                    Ok((leader, watcher)) => {
                        tx.send_if_modified(|l| {
                            let changed = *l != leader;
                            if changed {
                                info!(%url, leader = ?leader.as_ref().map(|l| &l.address), "leading master");
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
    url: ZkUrl,
    node: String,
    sequence: u64,
    session_timeout: Duration,
}

/// Joins the election under `url` with `record` (MasterInfo JSON) as the
/// member's data, creating the path if it is missing.
pub async fn contend(
    url: &ZkUrl,
    record: &[u8],
    session_timeout: Duration,
) -> Result<Candidacy, ZkError> {
    let client = connect(url, session_timeout).await?;
    let err = |what, source| ZkError::Zk {
        url: url.to_string(),
        what,
        source,
    };
    let dir = zk::CreateMode::Persistent.with_acls(acls(url));
    client
        .mkdir(&url.path, &dir)
        .await
        .map_err(|e| err("cannot create the election path", e))?;
    let prefix = format!("{}/{MEMBER_PREFIX}", url.path);
    let member = zk::CreateMode::EphemeralSequential.with_acls(acls(url));
    let (_, sequence) = client
        .create(&prefix, record, &member)
        .await
        .map_err(|e| err("cannot join the election", e))?;
    let sequence = u64::try_from(sequence.into_i64()).unwrap_or(0);
    let node = format!("{MEMBER_PREFIX}{sequence:010}");
    info!(%url, %node, "contending for leadership");
    Ok(Candidacy {
        client,
        url: url.clone(),
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

    /// Waits until this member leads; returns the leadership epoch
    /// (its sequence + 1, so every leadership's epoch is larger than the
    /// previous one's).
    pub async fn elected(&mut self) -> Result<u64, ZkError> {
        let err = |what, source| ZkError::Zk {
            url: self.url.to_string(),
            what,
            source,
        };
        loop {
            let (children, watcher) =
                match self.client.list_and_watch_children(&self.url.path).await {
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
                    self.url.to_string(),
                    format!("member {} is gone", self.node),
                ));
            }
            if leading_member(&children).is_some_and(|(n, _)| n == self.node) {
                info!(url = %self.url, node = %self.node, "elected leading master");
                return Ok(self.sequence + 1);
            }
            tokio::select! {
                _ = watcher.changed() => {}
                e = self.lost() => return Err(e),
            }
        }
    }

    /// Resolves when leadership can no longer be trusted: the session
    /// expired or was closed, or ZooKeeper was unreachable for a whole
    /// session timeout (after which the server has expired it).
    pub async fn lost(&self) -> ZkError {
        let mut state = self.client.state_watcher();
        loop {
            let now = state.state();
            let lost = |why: String| ZkError::SessionLost(self.url.to_string(), why);
            match now {
                zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                    state.changed().await;
                }
                zk::SessionState::Disconnected => {
                    match tokio::time::timeout(self.session_timeout, state.changed()).await {
                        Ok(_) => {}
                        Err(_) => {
                            return lost(format!(
                                "disconnected for the whole session timeout ({:?})",
                                self.session_timeout
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
        assert_eq!(leading_member(&children), Some(("info_0000000005", 5)));
        assert_eq!(member_sequence("log_replicas"), None);
        assert_eq!(leading_member(&["log_replicas".to_string()]), None);
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
