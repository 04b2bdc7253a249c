//! Applying services to a real HAProxy.
//!
//! A change in the structure (frontends, backends, labels) is rendered,
//! written next to the live file, checked with `haproxy -c`, moved into
//! place, and HAProxy, run in master-worker mode (`-W`), is reloaded
//! (SIGUSR2 to the master: the new worker takes the listening sockets over
//! from the old one through the admin socket, `expose-fd listeners`, and the
//! old one finishes its connections). A configuration that fails the check
//! is never applied: the last good one keeps serving.
//!
//! A change in the set or state of a backend's servers only — tasks started,
//! killed, healthy, unhealthy — goes through the Runtime API instead: every
//! backend is rendered with spare server slots ([`crate::slots_for`]), and
//! `set server … addr/state` fills and empties them, with no reload. The
//! file is still rewritten so that the next start or reload has the same
//! servers.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Service, Settings, render_slots, slots_for};

/// What an [`Haproxy::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// HAProxy already serves these services.
    Unchanged,
    /// Server slots changed through the Runtime API (this many commands).
    Runtime(usize),
    /// The configuration was reloaded.
    Reloaded,
    /// HAProxy was started.
    Started,
}

/// Counters and the last outcome, for `/metrics` and `/status`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Reloads (not counting the start).
    pub reloads: u64,
    /// Changes applied through the Runtime API.
    pub runtime_updates: u64,
    /// Runtime API commands sent.
    pub runtime_commands: u64,
    /// Configurations refused by `haproxy -c`.
    pub failed_checks: u64,
    /// Time to render the last configuration.
    pub last_render: Duration,
    /// Time to apply the last change (render, check, swap, reload or
    /// Runtime API), until HAProxy serves it.
    pub last_apply: Duration,
    /// The last error, cleared by the next successful apply.
    pub last_error: Option<String>,
    /// Apps whose new configuration HAProxy refused (each keeps its last
    /// good one), naming the app and the label.
    pub refused: Vec<String>,
    /// Backends and servers served now.
    pub backends: usize,
    /// Servers receiving traffic now.
    pub servers: usize,
}

/// One server line of a backend as the running HAProxy has it.
#[derive(Clone)]
struct Slot {
    /// The name it was started with (it cannot be renamed at runtime).
    name: String,
    /// The address it serves, `None` while in maintenance.
    serving: Option<String>,
    /// A spare slot never given a task by a render: preferred for new
    /// servers, so that named servers keep their names as long as can be.
    spare: bool,
}

/// What the running HAProxy was configured with.
#[derive(Debug)]
struct Live {
    /// The services without their servers: a change here needs a reload.
    shape: Vec<Service>,
    /// Backend name → its slots.
    slots: HashMap<String, Vec<Slot>>,
}

/// Whether `a` and `b` differ in their servers at most.
fn same_shape(a: &Service, b: &Service) -> bool {
    let Service {
        app_id,
        backend,
        service_port,
        port_index,
        bind_port,
        bind_addr,
        mode,
        balance,
        vhosts,
        path,
        sticky,
        redirect_to_https,
        weight,
        httpchk,
        check_timeout,
        check,
        appid_acl,
        ssl_cert,
        hsts,
        auth,
        servers: _,
    } = a;
    *app_id == b.app_id
        && *backend == b.backend
        && *service_port == b.service_port
        && *port_index == b.port_index
        && *bind_port == b.bind_port
        && *bind_addr == b.bind_addr
        && *mode == b.mode
        && *balance == b.balance
        && *vhosts == b.vhosts
        && *path == b.path
        && *sticky == b.sticky
        && *redirect_to_https == b.redirect_to_https
        && *weight == b.weight
        && *httpchk == b.httpchk
        && *check_timeout == b.check_timeout
        && *check == b.check
        && *appid_acl == b.appid_acl
        && *ssl_cert == b.ssl_cert
        && *hsts == b.hsts
        && *auth == b.auth
}

fn shape(services: &[Service]) -> Vec<Service> {
    services
        .iter()
        .map(|s| Service {
            servers: Vec::new(),
            ..s.clone()
        })
        .collect()
}

impl Live {
    fn new(services: &[Service]) -> Live {
        let slots = services
            .iter()
            .map(|s| {
                let mut slots: Vec<Slot> = s
                    .servers
                    .iter()
                    .map(|srv| Slot {
                        name: srv.name.clone(),
                        serving: Some(srv.address.clone()),
                        spare: false,
                    })
                    .collect();
                slots.extend((s.servers.len()..slots_for(s.servers.len())).map(|k| Slot {
                    name: crate::spare_name(k),
                    serving: None,
                    spare: true,
                }));
                (s.backend.clone(), slots)
            })
            .collect();
        Live {
            shape: shape(services),
            slots,
        }
    }

    /// Whether `services` can be served by changing server slots only.
    fn fits(&self, services: &[Service]) -> bool {
        services.len() == self.shape.len()
            && services.iter().zip(&self.shape).all(|(s, l)| {
                same_shape(s, l)
                    && self
                        .slots
                        .get(&s.backend)
                        .is_some_and(|slots| slots.len() >= s.servers.len())
            })
    }

    /// The Runtime API commands that turn the live servers into those of
    /// `services` (which [`Live::fits`]), with the slots updated as if they
    /// succeeded.
    fn diff(&mut self, services: &[Service]) -> Vec<String> {
        let mut cmds = Vec::new();
        for s in services {
            let Some(slots) = self.slots.get_mut(&s.backend) else {
                continue;
            };
            let wanted: std::collections::HashSet<&str> =
                s.servers.iter().map(|v| v.address.as_str()).collect();
            let serving: std::collections::HashSet<String> =
                slots.iter().filter_map(|v| v.serving.clone()).collect();
            // New servers join before old ones leave (a rolling update whose
            // new tasks became healthy as the old ones were killed must never
            // leave the backend empty): first into free slots, spare ones
            // before named ones.
            let mut joining = s.servers.iter().filter(|v| !serving.contains(&v.address));
            let mut late = Vec::new();
            for srv in joining.by_ref() {
                let free = slots
                    .iter()
                    .position(|v| v.serving.is_none() && v.spare)
                    .or_else(|| slots.iter().position(|v| v.serving.is_none()));
                let Some(i) = free else {
                    late.push(srv);
                    break;
                };
                fill(&mut cmds, s, &mut slots[i], &srv.address);
            }
            late.extend(joining);
            // Then servers no longer wanted leave (maintenance: their
            // connections finish, no new ones)…
            for slot in slots.iter_mut() {
                if let Some(addr) = &slot.serving
                    && !wanted.contains(addr.as_str())
                {
                    cmds.push(format!(
                        "set server {}/{} state maint",
                        s.backend, slot.name
                    ));
                    slot.serving = None;
                }
            }
            // …and those that found no free slot take theirs.
            for srv in late {
                let Some(i) = slots.iter().position(|v| v.serving.is_none()) else {
                    break;
                };
                fill(&mut cmds, s, &mut slots[i], &srv.address);
            }
        }
        cmds
    }

    fn capacity(&self, backend: &str) -> usize {
        self.slots.get(backend).map_or(0, Vec::len)
    }
}

/// The app (and the label, as near as the line tells) behind the line
/// What can go wrong running HAProxy.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// Writing or renaming a file (configuration, maps).
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Talking to the admin socket.
    #[error("HAProxy admin socket {}: {source}", socket.display())]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// HAProxy closed the admin socket mid-answer.
    #[error("HAProxy closed the admin socket")]
    SocketClosed,
    /// A Runtime API command HAProxy refused.
    #[error("HAProxy refused '{command}': {answer}")]
    Refused {
        /// The command.
        command: String,
        /// HAProxy's answer.
        answer: String,
    },
    /// `show info` without the worker's pid.
    #[error("HAProxy's show info has no Pid")]
    NoPid,
    /// The haproxy binary could not be run.
    #[error("cannot run {}: {source}", bin.display())]
    Run {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `haproxy -c` refused a configuration: its alerts.
    #[error("{0}")]
    Check(String),
    /// The new configuration is invalid and no app could be blamed.
    #[error("the new configuration is invalid; the last good one stays: {0}")]
    Invalid(String),
    /// The template failed.
    #[error("cannot render the configuration: {0}")]
    Render(String),
    /// SIGUSR2 could not be sent.
    #[error("cannot reload HAProxy (pid {pid}): {source}")]
    Reload {
        /// The master's pid.
        pid: u32,
        /// Why.
        source: nix::errno::Errno,
    },
    /// The master exited.
    #[error("HAProxy exited (its output says why)")]
    Exited,
    /// No new worker answered in time.
    #[error("HAProxy's new worker did not answer on {} within 30 s", socket.display())]
    NoWorker {
        /// The admin socket.
        socket: PathBuf,
    },
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> HaproxyError + '_ {
    move |source| HaproxyError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `--haproxy-map`'s map files for `services` (each replaced with
/// a rename). HAProxy reads them when it starts or reloads, so they are
/// written before the configuration that names them is checked.
fn write_maps(services: &[Service], settings: &Settings) -> Result<(), HaproxyError> {
    let Some(dir) = &settings.map_dir else {
        return Ok(());
    };
    let (domains, apps) = crate::maps(services);
    for (name, text) in [("domain2backend.map", domains), ("app2backend.map", apps)] {
        let path = Path::new(dir).join(name);
        let tmp = path.with_extension("map.new");
        std::fs::write(&tmp, text).map_err(file_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(file_error(&path))?;
    }
    Ok(())
}

/// `haproxy -c` complains about (`[file:line]`) in `text`.
fn culprit(text: &str, error: &str, services: &[Service]) -> Option<(String, String)> {
    let n: usize = error
        .split(".new:")
        .nth(1)?
        .split(']')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(n.checked_sub(1)?)?.trim();
    // The section the line is in: a backend or frontend is one service's;
    // the shared HTTP frontends name the backend in the line.
    let section = lines[..n]
        .iter()
        .rev()
        .find(|l| !l.starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let service = services.iter().find(|s| s.backend == section).or_else(|| {
        services.iter().find(|s| {
            line.split_whitespace().any(|w| {
                w == s.backend
                    || w == s.appid_acl
                    || w == format!("path_{}", s.backend)
                    || w.ends_with(&format!(
                        "_{}",
                        crate::sanitise(s.app_id.trim_start_matches('/'))
                    ))
            })
        })
    })?;
    let key = |k: &str| format!("HAPROXY_{}_{k}", service.port_index);
    let label = match line.split_whitespace().next().unwrap_or("") {
        "balance" => key("BALANCE"),
        "bind" => format!("{} or {}", key("BIND_ADDR"), key("PORT")),
        "acl" if line.contains("path_beg") => key("PATH"),
        "acl" | "use_backend" | "redirect" => key("VHOST"),
        "option" if line.contains("httpchk") => "healthChecks".into(),
        "cookie" => key("STICKY"),
        "mode" => key("MODE"),
        _ => format!("line {n}"),
    };
    Some((service.app_id.clone(), format!("{label} (`{line}`)")))
}

/// The commands that make `slot` of `s` serve `address`.
fn fill(cmds: &mut Vec<String>, s: &Service, slot: &mut Slot, address: &str) {
    let (ip, port) = split_address(address);
    let target = format!("{}/{}", s.backend, slot.name);
    cmds.push(format!("set server {target} addr {ip} port {port}"));
    if s.check.is_some() {
        // Marathon found it healthy: no wait for HAProxy's own checks to
        // rise.
        cmds.push(format!("set server {target} health up"));
    }
    cmds.push(format!("set server {target} state ready"));
    slot.serving = Some(address.to_string());
}

/// `1.2.3.4:80` → (`1.2.3.4`, `80`); `[::1]:80` → (`::1`, `80`).
fn split_address(address: &str) -> (&str, &str) {
    let (ip, port) = address.rsplit_once(':').unwrap_or((address, "0"));
    (ip.trim_start_matches('[').trim_end_matches(']'), port)
}

/// A connection to HAProxy's admin socket in interactive (`prompt`) mode.
struct Cli {
    stream: UnixStream,
    socket: PathBuf,
}

impl Cli {
    fn connect(socket: &Path) -> Result<Cli, HaproxyError> {
        let socket_error = |source| HaproxyError::Socket {
            socket: socket.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(socket_error)?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut cli = Cli {
            stream,
            socket: socket.to_path_buf(),
        };
        cli.send("prompt", 1)?;
        Ok(cli)
    }

    /// Sends one line of `n` `;`-separated commands; their outputs.
    fn send(&mut self, line: &str, n: usize) -> Result<Vec<String>, HaproxyError> {
        let io = |source| HaproxyError::Socket {
            socket: self.socket.clone(),
            source,
        };
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        // Each command's output ends with the prompt.
        while buf.windows(3).filter(|w| w == b"\n> ").count() < n {
            let got = self.stream.read(&mut chunk).map_err(io)?;
            if got == 0 {
                return Err(HaproxyError::SocketClosed);
            }
            buf.extend_from_slice(&chunk[..got]);
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text
            .split("\n> ")
            .take(n)
            .map(|s| s.trim().to_string())
            .collect())
    }

    /// Runs `cmds`, many to a line; the first refused one is an error.
    fn run(&mut self, cmds: &[String]) -> Result<(), HaproxyError> {
        let mut i = 0;
        while i < cmds.len() {
            // Lines stay well inside HAProxy's 16 kB buffer.
            let mut line = cmds[i].clone();
            let mut n = 1;
            while i + n < cmds.len() && line.len() + cmds[i + n].len() < 8000 {
                line.push(';');
                line.push_str(&cmds[i + n]);
                n += 1;
            }
            let outputs = self.send(&line, n)?;
            for (cmd, out) in cmds[i..i + n].iter().zip(outputs) {
                // Success is silent, or reports what changed.
                if !out.is_empty() && !out.contains("changed") {
                    return Err(HaproxyError::Refused {
                        command: cmd.clone(),
                        answer: out,
                    });
                }
            }
            i += n;
        }
        Ok(())
    }

    /// The worker's pid (`show info`).
    fn pid(&mut self) -> Result<u32, HaproxyError> {
        let out = self.send("show info", 1)?.remove(0);
        out.lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .ok_or(HaproxyError::NoPid)
    }
}

/// A HAProxy this process runs.
#[derive(Debug)]
pub struct Haproxy {
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    master: Option<Child>,
    live: Option<Live>,
    /// Apps whose configuration HAProxy refused: the refused shape and why.
    /// While an app asks for that shape it keeps its last good one.
    refused: HashMap<String, (Vec<Service>, String)>,
    /// Counters and the last outcome.
    pub stats: Stats,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={:?}", self.name, self.serving)
    }
}

impl Haproxy {
    /// HAProxy `bin` serving `config`, administered through `socket` (the
    /// `stats socket` of the configuration); not started until the first
    /// apply.
    pub fn new(
        bin: impl Into<PathBuf>,
        config: impl Into<PathBuf>,
        socket: impl Into<PathBuf>,
    ) -> Self {
        Haproxy {
            bin: bin.into(),
            config: config.into(),
            socket: socket.into(),
            master: None,
            live: None,
            refused: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// `haproxy -c` on `path`; the error is HAProxy's own message.
    pub fn check(&self, path: &Path) -> Result<(), HaproxyError> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg("-f")
            .arg(path)
            .output()
            .map_err(|source| HaproxyError::Run {
                bin: self.bin.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            // HAProxy's alerts name the line; its notices are noise here.
            let alerts: Vec<&str> = err.lines().filter(|l| l.contains("ALERT")).collect();
            Err(HaproxyError::Check(if alerts.is_empty() {
                err.trim().to_string()
            } else {
                alerts.join("\n")
            }))
        }
    }

    /// Makes HAProxy serve `services`: through the Runtime API when only
    /// servers changed, else by a checked reload (or the first start).
    pub fn apply(
        &mut self,
        services: &[Service],
        settings: &Settings,
    ) -> Result<Applied, HaproxyError> {
        let started = Instant::now();
        let result = self.apply_inner(services, settings);
        match &result {
            Ok(Applied::Unchanged) => {}
            Ok(_) => {
                self.stats.last_apply = started.elapsed();
                self.stats.last_error =
                    (!self.stats.refused.is_empty()).then(|| self.stats.refused.join("; "));
                self.stats.backends = services.len();
                self.stats.servers = services.iter().map(|s| s.servers.len()).sum();
            }
            Err(e) => self.stats.last_error = Some(e.to_string()),
        }
        result
    }

    fn apply_inner(
        &mut self,
        services: &[Service],
        settings: &Settings,
    ) -> Result<Applied, HaproxyError> {
        let running = self.running();
        // Apps still asking for what HAProxy refused keep their last good
        // configuration; the others are tried again.
        let mut services = services.to_vec();
        let by_app = |services: &[Service], app: &str| -> Vec<Service> {
            shape(services)
                .into_iter()
                .filter(|s| s.app_id == app)
                .collect()
        };
        self.refused
            .retain(|app, (bad, _)| by_app(&services, app) == *bad);
        for app in self.refused.keys() {
            self.keep_last_good(&mut services, app);
        }
        self.stats.refused = self.refused.values().map(|(_, why)| why.clone()).collect();
        let services = services.as_slice();
        if let Some(applied) = self.try_runtime(running, services, settings)? {
            return Ok(applied);
        }
        if let Some(dir) = self.config.parent() {
            std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        }
        // An app whose configuration HAProxy refuses keeps its last good
        // one (or stays out when it has none); the others go on.
        let mut services = services.to_vec();
        let tmp = self.config.with_extension("new");
        loop {
            write_maps(&services, settings)?;
            let text = self.render(&services, settings, None)?;
            std::fs::write(&tmp, &text).map_err(file_error(&tmp))?;
            let Err(e) = self.check(&tmp) else { break };
            let e = e.to_string();
            let _ = std::fs::remove_file(&tmp);
            self.stats.failed_checks += 1;
            let Some((app, label)) = culprit(&text, &e, &services)
                .filter(|(app, _)| !self.refused.contains_key(app) && self.refused.len() < 8)
            else {
                return Err(HaproxyError::Invalid(e));
            };
            let why = format!(
                "app {app}: {label}: HAProxy refuses it; the app keeps its last good configuration: {e}"
            );
            tracing::warn!("{why}");
            let bad = by_app(&services, &app);
            self.keep_last_good(&mut services, &app);
            self.refused.insert(app, (bad, why));
        }
        self.stats.refused = self.refused.values().map(|(_, why)| why.clone()).collect();
        let services = services.as_slice();
        // What is left may be what runs now, with other servers.
        if !self.refused.is_empty()
            && let Some(applied) = self.try_runtime(running, services, settings)?
        {
            let _ = std::fs::remove_file(&tmp);
            return Ok(applied);
        }
        std::fs::rename(&tmp, &self.config).map_err(file_error(&self.config))?;
        let applied = if running {
            self.reload()?;
            self.stats.reloads += 1;
            Applied::Reloaded
        } else {
            self.start()?;
            Applied::Started
        };
        self.live = Some(Live::new(services));
        Ok(applied)
    }

    /// Applies `services` through the Runtime API when only servers differ
    /// from what runs; `None` when a reload is needed.
    fn try_runtime(
        &mut self,
        running: bool,
        services: &[Service],
        settings: &Settings,
    ) -> Result<Option<Applied>, HaproxyError> {
        if running
            && let Some(live) = &mut self.live
            && live.fits(services)
        {
            let cmds = live.diff(services);
            if cmds.is_empty() {
                return Ok(Some(Applied::Unchanged));
            }
            let sent = Cli::connect(&self.socket).and_then(|mut cli| cli.run(&cmds));
            match sent {
                Ok(()) => {
                    self.stats.runtime_updates += 1;
                    self.stats.runtime_commands += cmds.len() as u64;
                    // The file follows, for the next start or reload; its
                    // structure is the one checked at the last reload.
                    let live = self.live.as_ref().map(|l| {
                        l.slots
                            .iter()
                            .map(|(b, s)| (b.clone(), s.len()))
                            .collect::<HashMap<_, _>>()
                    });
                    let text = self.render(services, settings, live.as_ref())?;
                    self.write(&text)?;
                    return Ok(Some(Applied::Runtime(cmds.len())));
                }
                Err(e) => {
                    // Whatever happened, a reload makes it right.
                    tracing::warn!("{e}; reloading instead");
                    self.live = None;
                }
            }
        }
        Ok(None)
    }

    /// Replaces `app`'s services with those HAProxy runs now (with the new
    /// servers where the backend is the same), or leaves the app out when
    /// it is not running.
    fn keep_last_good(&self, services: &mut Vec<Service>, app: &str) {
        let last_good: Vec<Service> = self
            .live
            .as_ref()
            .map(|l| {
                l.shape
                    .iter()
                    .filter(|s| s.app_id == app)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let servers: HashMap<String, Vec<crate::Server>> = services
            .iter()
            .filter(|s| s.app_id == app)
            .map(|s| (s.backend.clone(), s.servers.clone()))
            .collect();
        services.retain(|s| s.app_id != app);
        services.extend(last_good.into_iter().map(|s| Service {
            servers: servers.get(&s.backend).cloned().unwrap_or_default(),
            ..s
        }));
        services.sort_by(|a, b| (&a.app_id, a.service_port).cmp(&(&b.app_id, b.service_port)));
    }

    fn render(
        &mut self,
        services: &[Service],
        settings: &Settings,
        capacity: Option<&HashMap<String, usize>>,
    ) -> Result<String, HaproxyError> {
        let started = Instant::now();
        let text = render_slots(services, settings, &|s| match capacity {
            Some(c) => c.get(&s.backend).copied().unwrap_or(0).max(s.servers.len()),
            None => slots_for(s.servers.len()),
        })
        .map_err(|e| HaproxyError::Render(e.to_string()))?;
        self.stats.last_render = started.elapsed();
        Ok(text)
    }

    /// Replaces the live file (a rename: never half written).
    fn write(&self, text: &str) -> Result<(), HaproxyError> {
        let tmp = self.config.with_extension("new");
        std::fs::write(&tmp, text).map_err(file_error(&tmp))?;
        std::fs::rename(&tmp, &self.config).map_err(file_error(&self.config))
    }

    fn start(&mut self) -> Result<(), HaproxyError> {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(&self.bin)
            .arg("-W")
            .arg("-db")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|source| HaproxyError::Run {
                bin: self.bin.clone(),
                source,
            })?;
        self.master = Some(child);
        // Serving once its worker answers on the admin socket.
        self.wait_for_worker(None)
    }

    /// SIGUSR2 to the master, then waits for the new worker.
    fn reload(&mut self) -> Result<(), HaproxyError> {
        let old = Cli::connect(&self.socket).and_then(|mut c| c.pid()).ok();
        let pid = self.master.as_ref().map(|c| c.id()).unwrap_or(0);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGUSR2,
        )
        .map_err(|source| HaproxyError::Reload { pid, source })?;
        self.wait_for_worker(old)
    }

    /// Waits until a worker other than `old` answers on the admin socket.
    fn wait_for_worker(&mut self, old: Option<u32>) -> Result<(), HaproxyError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(pid) = Cli::connect(&self.socket).and_then(|mut c| c.pid())
                && Some(pid) != old
            {
                return Ok(());
            }
            if !self.running() {
                return Err(HaproxyError::Exited);
            }
            if Instant::now() > deadline {
                return Err(HaproxyError::NoWorker {
                    socket: self.socket.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server slots of `backend` (for tests and benchmarks).
    pub fn capacity(&self, backend: &str) -> usize {
        self.live.as_ref().map_or(0, |l| l.capacity(backend))
    }

    /// Whether the master process is alive.
    pub fn running(&mut self) -> bool {
        match &mut self.master {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops HAProxy (SIGTERM to the master, then waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        self.live = None;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// App `/web` on service port 10000 with a task per port.
    fn web(ports: &[u16]) -> Vec<Service> {
        let tasks: Vec<serde_json::Value> = ports
            .iter()
            .map(
                |p| serde_json::json!({"host": "127.0.0.1", "state": "TASK_RUNNING", "ports": [p]}),
            )
            .collect();
        let doc = serde_json::json!({"apps": [{"id": "/web", "labels": {"HAPROXY_GROUP": "external"},
                                               "portDefinitions": [{"port": 10000}], "tasks": tasks}]});
        crate::services(&doc, &Settings::default(), &|h| h.parse().ok()).0
    }

    /// The commands, shortened to `verb:slot[:port]`.
    fn short(cmds: &[String]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                let w: Vec<&str> = c.split_whitespace().collect();
                let slot = w[2].split('/').nth(1).unwrap();
                match w[3] {
                    "addr" => format!("addr:{slot}:{}", w[6]),
                    "state" => format!("{}:{slot}", w[4]),
                    other => format!("{other}:{slot}"),
                }
            })
            .collect()
    }

    #[test]
    fn new_servers_join_before_old_ones_leave() {
        let mut live = Live::new(&web(&[1, 2]));
        assert_eq!(live.capacity("web_10000"), 4);
        let next = web(&[3, 4]);
        assert!(live.fits(&next));
        assert_eq!(
            short(&live.diff(&next)),
            [
                "addr:slot-2:3",
                "ready:slot-2",
                "addr:slot-3:4",
                "ready:slot-3",
                "maint:127_0_0_1_1",
                "maint:127_0_0_1_2",
            ]
        );
        // Nothing more to do.
        assert!(live.diff(&next).is_empty());
    }

    #[test]
    fn without_enough_free_slots_the_rest_join_as_old_ones_leave() {
        let mut live = Live::new(&web(&[1, 2]));
        live.diff(&web(&[1, 2, 3]));
        // Three serving, one free: 4 joins first, 5 takes a freed slot.
        assert_eq!(
            short(&live.diff(&web(&[4, 5]))),
            [
                "addr:slot-3:4",
                "ready:slot-3",
                "maint:127_0_0_1_1",
                "maint:127_0_0_1_2",
                "maint:slot-2",
                "addr:127_0_0_1_1:5",
                "ready:127_0_0_1_1",
            ]
        );
        // More than the slots: not a Runtime API change.
        assert!(!live.fits(&web(&[1, 2, 3, 4, 5])));
    }
}
