//! The web UIs in a real headless Chromium (Debian's chromium and
//! chromium-driver, driven over WebDriver): create an app in marathon-rs'
//! form, watch it become healthy, scale it, follow a task's stdout from the
//! master's task page to its sandbox on the agent, and drain an agent from
//! the master's page. With `AGORA_SCREENSHOTS=<dir>` the test saves the
//! pages the README shows.

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::cluster::{Cluster, eventually, free_port, missing};
use crate::marathon::Marathon;

/// chromedriver, killed when dropped.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless Chromium session, or None (after saying why) without one.
async fn browser() -> Option<(Driver, Client)> {
    let (driver, chromium) = ("/usr/bin/chromedriver", "/usr/bin/chromium");
    if !Path::new(driver).exists() || !Path::new(chromium).exists() {
        missing("chromium and chromium-driver");
        return None;
    }
    let port = free_port();
    let child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    eventually("chromedriver listens", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"]
        }
    });
    // Agora picks ring explicitly everywhere; reqwest brings aws-lc-rs too,
    // so the process has no default for fantoccini's connector to take.
    let _ = rustls::crypto::CryptoProvider::install_default(
        agora_rpc::tls::provider().as_ref().clone(),
    );
    let client = ClientBuilder::rustls()
        .expect("a TLS connector")
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Some((driver, client))
}

/// The text of the first element `css` selects (None when there is none).
async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Waits until the element `css` selects says `want`.
async fn until_text(c: &Client, what: &str, css: &str, want: &str) {
    eventually(what, || async {
        text(c, css).await.filter(|t| t.trim() == want).map(|_| ())
    })
    .await;
}

async fn type_into(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("AGORA_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_created_scaled_followed_and_its_agent_drained_from_the_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let cluster = Cluster::start(2, "cpus:2;mem:1024;disk:1000").await;
    let m = Marathon::start(&cluster).await;

    // marathon-rs: the form creates the app and leads to its page.
    c.goto(&m.url("/")).await.unwrap();
    type_into(&c, "#new-app input[name=id]", "/web").await;
    type_into(
        &c,
        "#new-app input[name=cmd]",
        "echo hello-from-the-ui; sleep 600",
    )
    .await;
    type_into(&c, "#new-app input[name=health]", "true").await;
    click(&c, "#new-app button[type=submit]").await;
    eventually("the app's page", || async {
        c.current_url()
            .await
            .ok()
            .filter(|u| u.path() == "/ui/app/web")
    })
    .await;
    until_text(&c, "1 healthy instance", ".card .healthy", "1 / 1").await;

    // Scale to 2 from the page.
    type_into(&c, "#scale input[name=instances]", "2").await;
    click(&c, "#scale button").await;
    until_text(&c, "2 healthy instances", ".card .healthy", "2 / 2").await;
    assert_eq!(m.app("web").await["instances"], 2);
    screenshot(&c, "marathon-app.png").await;

    // The master: a task's page, then its sandbox on the agent, where
    // stdout is followed.
    c.goto(&cluster.url("/")).await.unwrap();
    let link = eventually("a task link", || async {
        c.find(Locator::Css("a.task")).await.ok()
    })
    .await;
    link.click().await.unwrap();
    until_text(&c, "the task page", ".card .state", "TASK_RUNNING").await;
    let statuses = text(&c, "table").await.unwrap_or_default();
    assert!(statuses.contains("TASK_RUNNING"), "{statuses}");
    click(&c, "a.sandbox").await;
    eventually("stdout followed on the agent", || async {
        text(&c, "pre#stdout")
            .await
            .filter(|t| t.contains("hello-from-the-ui"))
    })
    .await;

    // Drain the agent of one of the app's tasks from the master's page:
    // marathon-rs moves its instances, and the agent ends DRAINED.
    let host = m.tasks("web").await[0]["host"]
        .as_str()
        .unwrap()
        .to_string();
    c.goto(&cluster.url("/")).await.unwrap();
    let row = format!("tr[data-host='{host}']");
    click(&c, &format!("{row} button.drain")).await;
    until_text(
        &c,
        "the agent DRAINED",
        &format!("{row} td.state"),
        "DRAINED",
    )
    .await;
    screenshot(&c, "master.png").await;
    let tasks = m.tasks("web").await;
    assert!(
        tasks.iter().all(|t| t["host"] != host.as_str()),
        "{tasks:?}"
    );
    // Reactivate it from the page too.
    click(&c, &format!("{row} button.reactivate")).await;
    until_text(
        &c,
        "the agent active again",
        &format!("{row} td.state"),
        "active",
    )
    .await;

    c.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    m.stop().await;
    cluster.stop().await;
}
