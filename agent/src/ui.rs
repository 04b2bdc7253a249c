//! The sandbox page (`GET /ui/sandbox?path=…`): a directory of a sandbox
//! with its files, and its `stdout` and `stderr` followed live through
//! `/files/read` (the master's task page links here). Guarded as the files
//! API is.

use std::path::Path;

use askama::Template;
use serde_json::Value;

struct Entry {
    name: String,
    path: String,
    is_dir: bool,
    size: u64,
    mtime: String,
}

struct Followed {
    name: &'static str,
    path: String,
}

#[derive(Template)]
#[template(path = "sandbox.html")]
struct Page {
    css: &'static str,
    js: &'static str,
    hostname: String,
    title: String,
    dir: String,
    entries: Vec<Entry>,
    followed: Vec<Followed>,
}

/// Renders the page of `dir` from its `/files/browse` listing.
pub(crate) fn render(hostname: &str, dir: &Path, listing: &Value) -> String {
    let entries: Vec<Entry> = listing
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let path = e["path"].as_str().unwrap_or_default().to_string();
            Entry {
                name: Path::new(&path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                is_dir: e["mode"].as_str().is_some_and(|m| m.starts_with('d')),
                size: e["size"].as_u64().unwrap_or(0),
                mtime: chrono::DateTime::from_timestamp(e["mtime"].as_i64().unwrap_or(0), 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                path,
            }
        })
        .collect();
    let followed = ["stdout", "stderr"]
        .into_iter()
        .filter(|name| entries.iter().any(|e| !e.is_dir && e.name == *name))
        .map(|name| Followed {
            name,
            path: dir.join(name).to_string_lossy().into_owned(),
        })
        .collect();
    // Runs live in …/executors/<executor>/runs/<container>: name the executor.
    let parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let title = parts
        .iter()
        .position(|p| p == "executors")
        .and_then(|i| parts.get(i + 1))
        .cloned()
        .unwrap_or_else(|| dir.display().to_string());
    Page {
        css: agora_rpc::http::UI_CSS,
        js: agora_rpc::http::UI_JS,
        hostname: hostname.to_string(),
        title,
        dir: dir.display().to_string(),
        entries,
        followed,
    }
    .render()
    .unwrap_or_else(|e| format!("template error: {e}"))
}
