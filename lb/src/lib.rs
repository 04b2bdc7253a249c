//! `agora lb`: HAProxy configuration from marathon-rs apps, the way
//! marathon-lb writes it.
//!
//! [`services`] turns `GET /v2/apps?embed=apps.tasks` into the services to
//! balance (one per app service port in the load balancer's group, with the
//! `HAPROXY_*` labels applied and only running, healthy tasks as servers);
//! [`render`] writes `haproxy.cfg` from them with an askama template. Both
//! are pure: the same apps give the same text.

pub mod daemon;
pub mod haproxy;
pub mod templates;

pub use templates::Templates;

use std::net::{IpAddr, ToSocketAddrs as _};

use askama::Template;
use serde_json::{Map, Value};
use sha1::Digest as _;

/// Why an app's labels cannot be applied: names the app and the label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("app {app}: label {label}: {problem}")]
pub struct LabelError {
    /// The app id.
    pub app: String,
    /// The label.
    pub label: String,
    /// What is wrong.
    pub problem: String,
}

/// One server of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `host_ip_port`, sanitised (`ip_port` when host is the ip).
    pub name: String,
    /// `ip:port`.
    pub address: String,
    /// Stable across reloads: sha256(name) mod 32767, never 0.
    pub id: u32,
    /// Sticky cookie value: sha1(name), 10 hex digits.
    pub cookie: String,
}

/// One service port of one app: a frontend and a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The app id (`/shop/web`).
    pub app_id: String,
    /// `shop_web_10000`.
    pub backend: String,
    /// The service port.
    pub service_port: u16,
    /// Which of the app's service ports (the `n` of `HAPROXY_{n}_*`).
    pub port_index: usize,
    /// The frontend's bind port (`HAPROXY_{n}_PORT`, else the service port).
    pub bind_port: u16,
    /// `HAPROXY_{n}_BIND_ADDR`, `*` by default.
    pub bind_addr: String,
    /// `tcp` or `http`.
    pub mode: String,
    /// `HAPROXY_{n}_BALANCE`, `roundrobin` by default.
    pub balance: String,
    /// `HAPROXY_{n}_VHOST`, lowercase.
    pub vhosts: Vec<String>,
    /// `HAPROXY_{n}_PATH`.
    pub path: Option<String>,
    /// `HAPROXY_{n}_STICKY`.
    pub sticky: bool,
    /// `HAPROXY_{n}_REDIRECT_TO_HTTPS`.
    pub redirect_to_https: bool,
    /// `HAPROXY_{n}_BACKEND_WEIGHT` (larger routes first).
    pub weight: i64,
    /// `option httpchk GET <path>` from the app's HTTP health check.
    pub httpchk: Option<String>,
    /// `timeout check` seconds.
    pub check_timeout: u64,
    /// Per-server check options (`check inter 2s fall 4`).
    pub check: Option<String>,
    /// `app_` + the sanitised app id.
    pub appid_acl: String,
    /// `HAPROXY_{n}_SSL_CERT`: the service port's frontend speaks TLS.
    pub ssl_cert: Option<String>,
    /// `HAPROXY_{n}_USE_HSTS`.
    pub hsts: bool,
    /// `HAPROXY_{n}_AUTH`: basic auth on its virtual hosts.
    pub auth: Option<Auth>,
    /// The servers, sorted by address.
    pub servers: Vec<Server>,
}

/// `HAPROXY_{n}_AUTH` (`realm:user:encrypted-password`): the virtual hosts
/// ask for this user (a `userlist user_<backend>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The realm the browser shows.
    pub realm: String,
    /// The user.
    pub user: String,
    /// Its password, crypt(3)-encrypted (`openssl passwd -6`).
    pub password: String,
}

/// A route on the HTTP frontend (one per vhost of a service).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `host_<vhost>_<app>`.
    pub acl: String,
    /// The vhost.
    pub vhost: String,
    /// The backend.
    pub backend: String,
    /// `path_beg`.
    pub path: Option<String>,
    /// 301 to https when not TLS.
    pub redirect_to_https: bool,
    /// The realm, when the backend's userlist guards it.
    pub auth_realm: Option<String>,
    /// Routed through `domain2backend.map` (map mode, and nothing that
    /// needs an ACL: no path, auth or redirect).
    pub mapped: bool,
    weight: i64,
}

impl Service {
    /// Its virtual hosts need an ACL of their own (a path, auth or a
    /// redirect), map mode or not.
    fn needs_acl(&self) -> bool {
        self.path.is_some() || self.auth.is_some() || self.redirect_to_https
    }
}

/// The map files of `--haproxy-map` for `services`: `domain2backend.map`
/// (virtual host → backend, for the hosts routed by the map) and
/// `app2backend.map` (app id → backend, for the app-id frontend).
pub fn maps(services: &[Service]) -> (String, String) {
    let mut domains = String::new();
    let mut apps = String::new();
    for s in services.iter().filter(|s| s.mode == "http") {
        if !s.needs_acl() {
            for vhost in &s.vhosts {
                domains.push_str(&format!("{vhost} {}\n", s.backend));
            }
        }
        apps.push_str(&format!(
            "{} {}\n",
            s.app_id.to_ascii_lowercase(),
            s.backend
        ));
    }
    (domains, apps)
}

/// What is rendered around the services.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--group`: apps whose `HAPROXY_GROUP` lists it (`*`: every app).
    pub group: String,
    /// The HTTP (vhost) frontend's bind, e.g. `*:80`.
    pub http_bind: String,
    /// The app-id frontend's bind, e.g. `*:9091`.
    pub appid_bind: String,
    /// The stats page's bind, e.g. `*:9090`.
    pub stats_bind: String,
    /// The HTTPS (vhost, SNI) frontend's bind, e.g. `*:443`; rendered only
    /// with certificates.
    pub https_bind: String,
    /// `--ssl-certs`: certificate files (PEM with key) of the HTTPS
    /// frontend; none: no HTTPS frontend.
    pub ssl_certs: Vec<String>,
    /// `--haproxy-map`: virtual hosts and app ids are routed through map
    /// files in this directory (`domain2backend.map`, `app2backend.map`)
    /// instead of one ACL each, as marathon-lb's option does.
    pub map_dir: Option<String>,
    /// The admin socket.
    pub socket: String,
    /// The server state file (kept across reloads).
    pub state_file: String,
    /// Template overrides (`--templates`).
    pub templates: Templates,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            group: "external".into(),
            http_bind: "*:80".into(),
            appid_bind: "*:9091".into(),
            stats_bind: "*:9090".into(),
            https_bind: "*:443".into(),
            ssl_certs: Vec::new(),
            map_dir: None,
            socket: "/var/run/haproxy/socket".into(),
            state_file: "/var/state/haproxy/global".into(),
            templates: Templates::default(),
        }
    }
}

#[derive(Template)]
#[template(path = "haproxy.cfg", escape = "none")]
struct Config<'a> {
    socket: &'a str,
    state_file: &'a str,
    stats_bind: &'a str,
    http_bind: &'a str,
    appid_bind: &'a str,
    https_bind: &'a str,
    ssl_certs: &'a [String],
    map_dir: Option<&'a str>,
    head: Option<String>,
    http_head: Option<String>,
    appid_head: Option<String>,
    https_head: Option<String>,
    backends: Vec<Backend<'a>>,
    http_services: Vec<&'a Service>,
    http_routes: Vec<Route>,
    /// Services whose virtual hosts ask for a user.
    userlists: Vec<&'a Service>,
}

/// A backend as rendered: its service and the spare server slots after its
/// servers.
struct Backend<'a> {
    s: &'a Service,
    spares: Vec<Spare>,
    /// `HAPROXY_FRONTEND_HEAD` and `HAPROXY_BACKEND_HEAD`, when overridden.
    frontend_head: Option<String>,
    backend_head: Option<String>,
}

/// A server slot with no task yet: in maintenance on a placeholder address
/// until the Runtime API gives it one (`set server … addr`).
pub struct Spare {
    /// `slot-<k>`: no server name is one (those end in `_<port>`).
    pub name: String,
    /// The sticky cookie it would hand out.
    pub cookie: String,
}

/// The server slots a backend of `servers` tasks is rendered with: room to
/// double, which a default rolling update (maximumOverCapacity 1) needs,
/// so that it goes through the Runtime API without a reload.
pub fn slots_for(servers: usize) -> usize {
    (2 * servers).max(4)
}

/// The name of spare slot `k`.
pub fn spare_name(k: usize) -> String {
    format!("slot-{k}")
}

pub(crate) fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "true" | "t" | "yes" | "y" | "1"
    )
}

/// The server id marathon-lb gives `name`: sha256 mod 32767, never 0.
pub fn server_id(name: &str) -> u32 {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut n: u32 = 0;
    for b in digest.iter() {
        n = ((n as u64 * 256 + *b as u64) % 32767) as u32;
    }
    if n == 0 { 1 } else { n }
}

fn label<'a>(labels: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    labels.get(key).and_then(Value::as_str)
}

/// A label value that goes into the configuration: one line, no characters
/// HAProxy would read as syntax.
fn safe(
    app: &str,
    key: &str,
    value: &str,
    allowed: fn(char) -> bool,
) -> Result<String, LabelError> {
    if value.is_empty() || !value.chars().all(allowed) {
        return Err(LabelError {
            app: app.into(),
            label: key.into(),
            problem: format!("'{value}' is not allowed here"),
        });
    }
    Ok(value.to_string())
}

fn hostname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*')
}

fn path_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '#' | '\\' | '"' | '\'' | '{' | '}')
}

/// The services of `apps` (a `/v2/apps?embed=apps.tasks` document) for the
/// group in `settings`, and the apps left out because a label is wrong.
/// `resolve` turns a task's host into an address.
pub fn services(
    apps: &Value,
    settings: &Settings,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> (Vec<Service>, Vec<LabelError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for app in apps["apps"].as_array().into_iter().flatten() {
        match app_services(app, settings, resolve) {
            Ok(s) => out.extend(s),
            Err(e) => errors.push(e),
        }
    }
    out.sort_by(|a, b| (&a.app_id, a.service_port).cmp(&(&b.app_id, b.service_port)));
    // Two frontends on one port would stop HAProxy from starting: the
    // later app (by id) is left out.
    let port_of = |bind: &str| bind.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let https = (!settings.ssl_certs.is_empty()).then_some(&settings.https_bind);
    let mut taken: Vec<(String, u16, String)> = [
        (Some(&settings.http_bind), "the HTTP frontend"),
        (Some(&settings.appid_bind), "the app-id frontend"),
        (Some(&settings.stats_bind), "the stats page"),
        (https, "the HTTPS frontend"),
    ]
    .into_iter()
    .filter_map(|(b, what)| Some((b?, what)))
    .filter_map(|(b, what)| Some(("*".to_string(), port_of(b)?, what.to_string())))
    .collect();
    let mut bad = std::collections::BTreeSet::new();
    for s in &out {
        let clash = taken.iter().find(|(addr, port, _)| {
            *port == s.bind_port && (addr == "*" || s.bind_addr == "*" || *addr == s.bind_addr)
        });
        if let Some((_, port, owner)) = clash {
            if bad.insert(s.app_id.clone()) {
                let label = if s.bind_port == s.service_port {
                    "servicePort".to_string()
                } else {
                    format!("HAPROXY_{}_PORT", s.port_index)
                };
                errors.push(LabelError {
                    app: s.app_id.clone(),
                    label,
                    problem: format!("port {port} is already bound by {owner}"),
                });
            }
        } else {
            taken.push((
                s.bind_addr.clone(),
                s.bind_port,
                format!("app {}", s.app_id),
            ));
        }
    }
    out.retain(|s| !bad.contains(&s.app_id));
    (out, errors)
}

fn in_group(groups: Option<&str>, group: &str) -> bool {
    group == "*" || groups.is_some_and(|g| g.split(',').any(|x| x.trim() == group))
}

/// An app's service ports: its port mappings' for bridge or container
/// networking, else its port definitions'; and whether it is on the host
/// network.
/// How an app's tasks are reached (marathon-lb's `get_app_networking_mode`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// At the agent, on the task's host ports.
    Host,
    /// At the agent, on the host ports Docker's bridge maps.
    Bridge,
    /// At the task's own address, on its container ports.
    Container,
}

/// marathon-lb's rule: a legacy `ipAddress` or Docker `USER` networking
/// means container, Docker `BRIDGE` bridge, and the last of `networks`
/// decides (a missing mode being `container`).
fn networking_mode(app: &Value) -> Mode {
    let mut mode = Mode::Host;
    if app["ipAddress"].is_object() {
        mode = Mode::Container;
    }
    match app["container"]["docker"]["network"].as_str() {
        Some("USER") => mode = Mode::Container,
        Some("BRIDGE") => mode = Mode::Bridge,
        _ => {}
    }
    if let Some(last) = app["networks"].as_array().and_then(|n| n.last()) {
        mode = match last["mode"].as_str().unwrap_or("container") {
            "host" => Mode::Host,
            "container/bridge" => Mode::Bridge,
            _ => Mode::Container,
        };
    }
    mode
}

fn service_ports(app: &Value) -> (Vec<u16>, bool) {
    // Service ports: port mappings for bridge/container networking, else
    // port definitions.
    let mappings = app["container"]["portMappings"]
        .as_array()
        .or_else(|| app["container"]["docker"]["portMappings"].as_array());
    let host_network = mappings.is_none_or(Vec::is_empty);
    let ports: Vec<u16> = if host_network {
        app["portDefinitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .collect()
    } else {
        mappings
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p["servicePort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
            })
            .collect()
    };
    (ports, host_network)
}

/// `HAPROXY_{n}_AUTH`: `realm:user:encrypted-password`, each checked.
fn auth_label(id: &str, label: &str, a: &str) -> Result<Auth, LabelError> {
    let bad = |problem: &str| LabelError {
        app: id.to_string(),
        label: label.to_string(),
        problem: problem.into(),
    };
    let mut parts = a.splitn(3, ':');
    let (Some(realm), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected realm:user:encrypted-password"));
    };
    let word = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if realm.is_empty() || !realm.chars().all(|c| word(c) || c == ' ') {
        return Err(bad(
            "the realm may have letters, digits, spaces, '.', '_', '-'",
        ));
    }
    if user.is_empty() || !user.chars().all(word) {
        return Err(bad("the user may have letters, digits, '.', '_', '-'"));
    }
    if password.is_empty() || !password.chars().all(|c| word(c) || "$/".contains(c)) {
        return Err(bad(
            "the password must be crypt(3)-encrypted (openssl passwd -6)",
        ));
    }
    Ok(Auth {
        realm: realm.into(),
        user: user.into(),
        password: password.into(),
    })
}

/// What HAProxy checks of a service from the app's health check at its
/// port index: the HTTP path (`http_path`: an HTTP check of an http
/// service), the check timeout, and the `check` server option.
fn health_check(
    id: &str,
    hc: Option<&Value>,
    http_path: bool,
) -> Result<(Option<String>, u64, Option<String>), LabelError> {
    Ok(match hc {
        Some(h) => {
            let interval = h["intervalSeconds"].as_u64().unwrap_or(60);
            let timeout = h["timeoutSeconds"].as_u64().unwrap_or(20);
            let fall = h["maxConsecutiveFailures"].as_u64().unwrap_or(3) + 1;
            let chk = http_path
                .then(|| h["path"].as_str().unwrap_or("/").to_string())
                .map(|p| safe(id, "healthChecks.path", &p, path_char))
                .transpose()?;
            (
                chk,
                timeout,
                Some(format!("check inter {interval}s fall {fall}")),
            )
        }
        None => (None, 0, None),
    })
}

/// A label that holds `what`, a number `ok` accepts, if set.
fn number<T: std::str::FromStr>(
    id: &str,
    label: &str,
    value: Option<&str>,
    (what, ok): (&str, impl Fn(&T) -> bool),
) -> Result<Option<T>, LabelError> {
    value
        .map(|v| {
            v.parse::<T>().ok().filter(&ok).ok_or_else(|| LabelError {
                app: id.to_string(),
                label: label.to_string(),
                problem: format!("'{v}' is not {what}"),
            })
        })
        .transpose()
}

/// `HAPROXY_{n}_VHOST`: comma-separated host names, lowercased.
fn vhosts(id: &str, label: &str, value: Option<&str>) -> Result<Vec<String>, LabelError> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .map(|h| safe(id, label, &h, hostname_char))
        .collect()
}

fn app_services(
    app: &Value,
    settings: &Settings,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<Vec<Service>, LabelError> {
    let id = app["id"].as_str().unwrap_or("").to_string();
    let empty = Map::new();
    let labels = app["labels"].as_object().unwrap_or(&empty);
    let app_groups = label(labels, "HAPROXY_GROUP");
    let (service_ports, host_network) = service_ports(app);
    let health_checks = app["healthChecks"].as_array().cloned().unwrap_or_default();
    let networking = networking_mode(app);
    let mut services = Vec::new();
    for (n, &service_port) in service_ports.iter().enumerate() {
        let key = |k: &str| format!("HAPROXY_{n}_{k}");
        let groups = label(labels, &key("GROUP")).or(app_groups);
        if !in_group(groups, &settings.group) || service_port == 0 {
            continue;
        }
        let vhosts = vhosts(&id, &key("VHOST"), label(labels, &key("VHOST")))?;
        let hc = health_checks
            .iter()
            .find(|h| h["portIndex"].as_u64().unwrap_or(0) as usize == n);
        let http_check = hc.is_some_and(|h| {
            matches!(
                h["protocol"].as_str(),
                Some("HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS")
            )
        });
        let mode = match label(labels, &key("MODE")) {
            Some(m @ ("tcp" | "http")) => m.to_string(),
            Some(other) => {
                return Err(LabelError {
                    app: id,
                    label: key("MODE"),
                    problem: format!("'{other}' is neither tcp nor http"),
                });
            }
            None if !vhosts.is_empty() || http_check => "http".into(),
            None => "tcp".into(),
        };
        let path = label(labels, &key("PATH"))
            .map(|p| safe(&id, &key("PATH"), p, path_char))
            .transpose()?;
        if path.is_some() && vhosts.is_empty() {
            return Err(LabelError {
                app: id,
                label: key("PATH"),
                problem: "needs a VHOST".into(),
            });
        }
        let balance = label(labels, &key("BALANCE"))
            .map(|b| {
                safe(&id, &key("BALANCE"), b, |c| {
                    c.is_ascii_alphanumeric() || "-_()".contains(c)
                })
            })
            .transpose()?
            .unwrap_or_else(|| "roundrobin".into());
        let bind_addr = label(labels, &key("BIND_ADDR"))
            .map(|b| {
                safe(&id, &key("BIND_ADDR"), b, |c| {
                    c.is_ascii_hexdigit() || ".:*[]".contains(c)
                })
            })
            .transpose()?
            .unwrap_or_else(|| "*".into());
        let port = ("a port", |p: &u16| *p > 0);
        let bind_port =
            number(&id, &key("PORT"), label(labels, &key("PORT")), port)?.unwrap_or(service_port);
        let any = ("a number", |_: &i64| true);
        let weight = number(
            &id,
            &key("BACKEND_WEIGHT"),
            label(labels, &key("BACKEND_WEIGHT")),
            any,
        )?
        .unwrap_or(0);
        let (httpchk, check_timeout, check) = health_check(&id, hc, http_check && mode == "http")?;
        let ssl_cert = label(labels, &key("SSL_CERT"))
            .map(|c| safe(&id, &key("SSL_CERT"), c, path_char))
            .transpose()?;
        let auth = label(labels, &key("AUTH"))
            .map(|a| auth_label(&id, &key("AUTH"), a))
            .transpose()?;
        let backend = format!(
            "{}_{service_port}",
            id.trim_start_matches('/').replace('/', "_")
        );
        let backend = sanitise(&backend);
        let servers = if networking == Mode::Container {
            container_servers(app, n, !health_checks.is_empty())
        } else {
            servers(app, n, host_network, !health_checks.is_empty(), resolve)
        };
        services.push(Service {
            appid_acl: format!("app_{}", sanitise(&id)),
            app_id: id.clone(),
            backend,
            service_port,
            port_index: n,
            bind_port,
            bind_addr,
            mode,
            balance,
            vhosts,
            path,
            sticky: label(labels, &key("STICKY")).is_some_and(truthy),
            redirect_to_https: label(labels, &key("REDIRECT_TO_HTTPS")).is_some_and(truthy),
            weight,
            httpchk,
            check_timeout,
            check,
            ssl_cert,
            hsts: label(labels, &key("USE_HSTS")).is_some_and(truthy),
            auth,
            servers,
        });
    }
    Ok(services)
}

fn servers(
    app: &Value,
    n: usize,
    host_network: bool,
    has_health_checks: bool,
    resolve: &dyn Fn(&str) -> Option<IpAddr>,
) -> Vec<Server> {
    let mut out = Vec::new();
    for t in app["tasks"].as_array().into_iter().flatten() {
        if !serving(t, has_health_checks) {
            continue;
        }
        let host = t["host"].as_str().unwrap_or("");
        let Some(port) = t["ports"][n].as_u64().and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        // The agent's address: its hostname resolved, else (host
        // networking) the task's own address, which is the agent's.
        let task_ip = t["ipAddresses"][0]["ipAddress"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok());
        let Some(ip) = resolve(host).or(if host_network { task_ip } else { None }) else {
            continue;
        };
        let name = if host == ip.to_string() {
            sanitise(&format!("{ip}_{port}"))
        } else {
            sanitise(&format!("{host}_{ip}_{port}"))
        };
        out.push(server(name, ip, port));
    }
    unique(out)
}

/// The server `name` at `ip:port`.
fn server(name: String, ip: IpAddr, port: u16) -> Server {
    let address = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    Server {
        id: server_id(&name),
        cookie: cookie(&name),
        name,
        address,
    }
}

/// Servers sorted by address, each address once, ids unique within the
/// backend (on a collision, hashed again).
fn unique(mut out: Vec<Server>) -> Vec<Server> {
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out.dedup_by(|a, b| a.address == b.address);
    let mut taken = std::collections::HashSet::new();
    for s in &mut out {
        let mut k = 0;
        while !taken.insert(s.id) {
            k += 1;
            s.id = server_id(&format!("{}#{k}", s.name));
        }
    }
    out
}

/// Whether a task may take traffic: running and, with health checks, alive
/// by every result.
fn serving(t: &Value, has_health_checks: bool) -> bool {
    if t["state"] != "TASK_RUNNING" {
        return false;
    }
    if has_health_checks {
        let results = t["healthCheckResults"].as_array();
        return results.is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true));
    }
    true
}

/// The servers of service port `n` of an app on a container network: each
/// task at its own address (the first of `ipAddresses`; a task without one
/// yet waits) on mapping `n`'s container port, as marathon-lb does.
fn container_servers(app: &Value, n: usize, has_health_checks: bool) -> Vec<Server> {
    let mappings = app["container"]["portMappings"]
        .as_array()
        .or_else(|| app["container"]["docker"]["portMappings"].as_array());
    let Some(port) = mappings
        .and_then(|m| m.get(n))
        .and_then(|m| m["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
    else {
        return Vec::new();
    };
    let out: Vec<Server> = app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| serving(t, has_health_checks))
        .filter_map(|t| {
            let ip: IpAddr = t["ipAddresses"][0]["ipAddress"].as_str()?.parse().ok()?;
            let name = sanitise(&format!("{}_{ip}_{port}", t["host"].as_str().unwrap_or("")));
            Some(server(name, ip, port))
        })
        .collect();
    unique(out)
}

fn cookie(name: &str) -> String {
    hex(&sha1::Sha1::digest(name.as_bytes()))[..10].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Resolves a host name (or takes an address as it is); `None` when it
/// does not resolve.
pub fn resolve_host(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 0).to_socket_addrs().ok()?.map(|a| a.ip()).next()
}

/// `haproxy.cfg` for `services`, each backend with [`slots_for`] its
/// servers.
pub fn render(services: &[Service], settings: &Settings) -> Result<String, askama::Error> {
    render_slots(services, settings, &|s| slots_for(s.servers.len()))
}

/// `haproxy.cfg` for `services`, backend `s` with `slots(s)` server slots
/// (never fewer than its servers).
pub fn render_slots(
    services: &[Service],
    settings: &Settings,
    slots: &dyn Fn(&Service) -> usize,
) -> Result<String, askama::Error> {
    let t = &settings.templates;
    let backends = services
        .iter()
        .map(|s| Backend {
            frontend_head: t.fill(
                "HAPROXY_FRONTEND_HEAD",
                &[
                    ("backend", &s.backend),
                    ("bindAddr", &s.bind_addr),
                    ("servicePort", &s.bind_port.to_string()),
                    ("mode", &s.mode),
                    (
                        "sslCert",
                        &s.ssl_cert
                            .as_ref()
                            .map(|c| format!("ssl crt {c}"))
                            .unwrap_or_default(),
                    ),
                    ("bindOptions", ""),
                ],
            ),
            backend_head: t.fill(
                "HAPROXY_BACKEND_HEAD",
                &[
                    ("backend", &s.backend),
                    ("balance", &s.balance),
                    ("mode", &s.mode),
                ],
            ),
            s,
            spares: (s.servers.len()..slots(s))
                .map(|k| {
                    let name = spare_name(k);
                    Spare {
                        cookie: cookie(&name),
                        name,
                    }
                })
                .collect(),
        })
        .collect();
    let http_services: Vec<&Service> = services.iter().filter(|s| s.mode == "http").collect();
    let mut http_routes: Vec<Route> = Vec::new();
    for s in services.iter().filter(|s| s.mode == "http") {
        let app_part = sanitise(s.app_id.trim_start_matches('/'));
        for vhost in &s.vhosts {
            http_routes.push(Route {
                acl: format!("host_{}_{app_part}", sanitise(vhost)),
                vhost: vhost.clone(),
                backend: s.backend.clone(),
                path: s.path.clone(),
                redirect_to_https: s.redirect_to_https,
                auth_realm: s.auth.as_ref().map(|a| a.realm.clone()),
                mapped: settings.map_dir.is_some() && !s.needs_acl(),
                weight: if s.path.is_some() {
                    s.weight.max(1)
                } else {
                    s.weight
                },
            });
        }
    }
    // Heavier (and path) routes first, as marathon-lb orders use_backend.
    http_routes.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.acl.cmp(&b.acl)));
    Config {
        head: t.fill(
            "HAPROXY_HEAD",
            &[
                ("socket", &settings.socket),
                ("stateFile", &settings.state_file),
                ("statsBind", &settings.stats_bind),
            ],
        ),
        http_head: t.fill(
            "HAPROXY_HTTP_FRONTEND_HEAD",
            &[("httpBind", &settings.http_bind)],
        ),
        appid_head: t.fill(
            "HAPROXY_HTTP_FRONTEND_APPID_HEAD",
            &[("appidBind", &settings.appid_bind)],
        ),
        https_head: t.fill(
            "HAPROXY_HTTPS_FRONTEND_HEAD",
            &[
                ("httpsBind", &settings.https_bind),
                (
                    "sslCerts",
                    &settings
                        .ssl_certs
                        .iter()
                        .map(|c| format!("crt {c}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            ],
        ),
        socket: &settings.socket,
        state_file: &settings.state_file,
        stats_bind: &settings.stats_bind,
        http_bind: &settings.http_bind,
        appid_bind: &settings.appid_bind,
        https_bind: &settings.https_bind,
        ssl_certs: &settings.ssl_certs,
        map_dir: settings.map_dir.as_deref(),
        userlists: services
            .iter()
            .filter(|s| s.mode == "http" && s.auth.is_some() && !s.vhosts.is_empty())
            .collect(),
        backends,
        http_services,
        http_routes,
    }
    .render()
}
