//! The fetcher: puts a task's `CommandInfo.uris` into its sandbox before the
//! command starts, as the Mesos fetcher does. `http://` URIs are
//! downloaded, `file://` URIs and absolute paths copied; archives (`.tar`,
//! `.tar.gz`/`.tgz`, `.tar.bz2`, `.tar.xz`, `.zip`) are extracted unless
//! `extract` is false; `executable` sets the mode to 0755; `output_file`
//! renames. Archives are unpacked with the system's `tar`/`unzip`, like
//! Mesos.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use agora_proto::v1::command_info::Uri;

/// Largest download accepted.
const MAX_DOWNLOAD: u64 = 2 * 1024 * 1024 * 1024;

fn base_name(value: &str) -> String {
    let trimmed = value.split(['?', '#']).next().unwrap_or(value);
    trimmed
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string()
}

fn archive_kind(name: &str) -> Option<&'static [&'static str]> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".zip") {
        Some(&["unzip", "-o", "-q"])
    } else if [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ]
    .iter()
    .any(|e| n.ends_with(e))
    {
        Some(&["tar", "-xf"])
    } else {
        None
    }
}

/// Fetches every URI into `sandbox`; the first failure is returned.
pub async fn fetch_all(uris: &[Uri], sandbox: &Path) -> Result<(), String> {
    for uri in uris {
        fetch(uri, sandbox)
            .await
            .map_err(|e| format!("Failed to fetch '{}': {e}", uri.value))?;
    }
    Ok(())
}

async fn fetch(uri: &Uri, sandbox: &Path) -> Result<(), String> {
    let name = match uri.output_file.as_deref().filter(|f| !f.is_empty()) {
        Some(f) if f.contains("..") || f.starts_with('/') => {
            return Err(format!("output_file '{f}' must stay inside the sandbox"));
        }
        Some(f) => f.to_string(),
        None => base_name(&uri.value),
    };
    let dest: PathBuf = sandbox.join(&name);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| e.to_string())?;
    }
    let v = uri.value.trim();
    if v.starts_with("http://") {
        download(v, &dest).await?;
    } else if v.starts_with("https://") {
        return Err("https URIs are not supported by this agent; use http or a local path".into());
    } else {
        let path = v.strip_prefix("file://").unwrap_or(v);
        if !path.starts_with('/') {
            return Err("expected http://, file:// or an absolute path".into());
        }
        tokio::fs::copy(path, &dest)
            .await
            .map_err(|e| format!("cannot copy {path}: {e}"))?;
    }
    if uri.executable.unwrap_or(false) {
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| e.to_string())?;
    } else if uri.extract.unwrap_or(true)
        && let Some(cmd) = archive_kind(&name)
    {
        let out = tokio::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg(&dest)
            .current_dir(sandbox)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                cmd[0],
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

async fn download(url: &str, dest: &Path) -> Result<(), String> {
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let response = reqwest::get(url).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET answered {}", response.status()));
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = response.bytes_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        total += chunk.len() as u64;
        if total > MAX_DOWNLOAD {
            return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
        }
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    file.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::Filter as _;

    fn uri(value: &str) -> Uri {
        Uri {
            value: value.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn copies_downloads_extracts_and_marks_executable() {
        let src = tempfile::tempdir().unwrap();
        let sandbox = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::create_dir(src.path().join("pkg")).unwrap();
        std::fs::write(src.path().join("pkg/data.txt"), "payload").unwrap();
        let tar = std::process::Command::new("tar")
            .args(["-czf", "pkg.tgz", "pkg"])
            .current_dir(src.path())
            .status()
            .unwrap();
        assert!(tar.success());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = std::fs::read(src.path().join("pkg.tgz")).unwrap();
        let routes = warp::path("pkg.tgz").map(move || body.clone());
        tokio::spawn(agora_rpc::http::serve(
            listener,
            routes,
            std::future::pending(),
        ));

        let mut script = uri(&format!("file://{}", src.path().join("run.sh").display()));
        script.executable = Some(true);
        let mut renamed = uri(&src.path().join("pkg/data.txt").display().to_string());
        renamed.output_file = Some("copy.txt".into());
        let uris = vec![
            script,
            uri(&format!("http://127.0.0.1:{port}/pkg.tgz")),
            renamed,
        ];
        fetch_all(&uris, sandbox.path()).await.unwrap();
        let mode = std::fs::metadata(sandbox.path().join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(sandbox.path().join("pkg/data.txt")).unwrap(),
            "payload"
        );
        assert_eq!(
            std::fs::read_to_string(sandbox.path().join("copy.txt")).unwrap(),
            "payload"
        );

        let err = fetch_all(
            &[uri(&format!("http://127.0.0.1:{port}/missing"))],
            sandbox.path(),
        )
        .await
        .unwrap_err();
        assert!(err.contains("404"), "{err}");
        let mut escape = uri("/etc/hostname");
        escape.output_file = Some("../x".into());
        assert!(fetch_all(&[escape], sandbox.path()).await.is_err());
        assert!(
            fetch_all(&[uri("relative/path")], sandbox.path())
                .await
                .is_err()
        );
    }
}
