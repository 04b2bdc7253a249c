//! The files API's reads, as Mesos' `files` process answers them: only the
//! bytes asked for are read (`/files/read` at most 64 KiB a call, as Mesos
//! caps `length` at 16 pages), downloads stream from the file in chunks, and
//! a listing states each entry. Paths are resolved and confined to the work
//! dir by the caller ([`crate::http`]).

use std::io::SeekFrom;
use std::path::Path;

use agora_rpc::http::HttpError;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// The most `/files/read` returns in one call (Mesos: 16 pages).
pub const MAX_READ: u64 = 64 * 1024;

/// Chunks a download is streamed in.
const CHUNK: usize = 64 * 1024;

fn unreadable() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "No such file or directory")
}

/// Opens a regular file (400 for a directory or anything else, which could
/// block or never end).
async fn open(path: &Path, verb: &str) -> Result<(tokio::fs::File, u64), HttpError> {
    let meta = tokio::fs::metadata(path).await.map_err(|_| unreadable())?;
    if meta.is_dir() {
        return Err(HttpError::bad_request(format!("Cannot {verb} a directory")));
    }
    if !meta.is_file() {
        return Err(HttpError::bad_request(format!(
            "Cannot {verb} anything but a regular file"
        )));
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|_| unreadable())?;
    Ok((file, meta.len()))
}

/// `{"data", "offset"}` for `length` bytes (at most [`MAX_READ`]) at
/// `offset`. Without an offset, or past the end, the data is empty and the
/// offset is the file's size (how a pager learns where the end is); without
/// a length, up to the end.
pub async fn read(
    path: &Path,
    offset: Option<u64>,
    length: Option<u64>,
) -> Result<Value, HttpError> {
    let (mut file, size) = open(path, "read").await?;
    let offset = offset.unwrap_or(size);
    if offset >= size {
        return Ok(json!({"data": "", "offset": size}));
    }
    let length = length
        .unwrap_or(size - offset)
        .min(MAX_READ)
        .min(size - offset);
    file.seek(SeekFrom::Start(offset))
        .await
        .map_err(|_| unreadable())?;
    let mut data = Vec::with_capacity(length as usize);
    (&mut file)
        .take(length)
        .read_to_end(&mut data)
        .await
        .map_err(|_| unreadable())?;
    Ok(json!({"data": String::from_utf8_lossy(&data), "offset": offset}))
}

/// The file as an attachment, streamed (memory stays at one chunk per
/// download, whatever the file's size).
pub async fn download(path: &Path) -> Result<warp::reply::Response, HttpError> {
    let (file, size) = open(path, "download").await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
    let mut r = warp::Reply::into_response(warp::reply::stream(stream));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_"))
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

/// The entries of a directory, sorted by path.
pub async fn browse(dir: &Path) -> Result<Value, HttpError> {
    let meta = tokio::fs::metadata(dir).await.map_err(|_| unreadable())?;
    if !meta.is_dir() {
        return Err(HttpError::bad_request("Cannot browse a file"));
    }
    let mut entries = tokio::fs::read_dir(dir).await.map_err(|_| unreadable())?;
    let mut out = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let meta = entry.metadata().await.ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        out.push(json!({
            "path": entry.path().to_string_lossy(),
            "size": meta.as_ref().map_or(0, |m| m.len()),
            "nlink": 1,
            "mode": if is_dir { "drwxr-xr-x" } else { "-rw-r--r--" },
            "mtime": meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        }));
    }
    out.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_only_what_is_asked_as_mesos_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stdout");
        let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        // No offset: the size, no data.
        let v = read(&file, None, None).await.unwrap();
        assert_eq!(
            (v["offset"].as_u64(), v["data"].as_str()),
            (Some(200_000), Some(""))
        );
        let v = read(&file, Some(26), Some(3)).await.unwrap();
        assert_eq!(
            (v["offset"].as_u64(), v["data"].as_str()),
            (Some(26), Some("abc"))
        );
        // Capped at 64 KiB.
        let v = read(&file, Some(0), None).await.unwrap();
        assert_eq!(v["data"].as_str().unwrap().len() as u64, MAX_READ);
        // Up to the end; past it, empty at the size.
        let v = read(&file, Some(199_998), Some(10)).await.unwrap();
        assert_eq!(v["data"], "gh");
        let v = read(&file, Some(300_000), Some(10)).await.unwrap();
        assert_eq!(
            (v["offset"].as_u64(), v["data"].as_str()),
            (Some(200_000), Some(""))
        );
        // A directory is refused; a missing file is 404.
        assert_eq!(
            read(dir.path(), Some(0), None).await.unwrap_err().status,
            400
        );
        assert_eq!(
            read(&dir.path().join("nope"), Some(0), None)
                .await
                .unwrap_err()
                .status,
            404
        );
    }

    #[tokio::test]
    async fn downloads_stream_with_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &body).unwrap();
        let r = download(&file).await.unwrap();
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "300000");
        assert!(
            r.headers()[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .contains("data.bin")
        );
        use http_body_util::BodyExt as _;
        let got = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &body[..]);
    }
}
