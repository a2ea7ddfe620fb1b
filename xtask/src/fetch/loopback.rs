//! A loopback HTTP server that answers like the Hugging Face Hub, for the fetch tests (it
//! never leaves 127.0.0.1):
//!
//! - `HEAD`/`GET /{repo}/resolve/{rev}/{file}` (rev `main` or the commit): an LFS file is a
//!   302 to `/cdn/{sha256}` with `x-repo-commit`, `x-linked-etag: "{sha256}"`,
//!   `x-linked-size` and the pointer's own `ETag`; a regular file is a 200 with its git-style
//!   `ETag` and `x-repo-commit`; an unknown file a 404 with `x-error-code: EntryNotFound` and
//!   `x-repo-commit`; a renamed repo a 307 to the new name by a relative `Location`.
//! - `GET /cdn/{sha256}`: the bytes, honouring `Range: bytes=N-` with a 206 and
//!   `Content-Range`; a file marked with [`FakeHub::cut_next`] is cut mid-body once.
//!
//! Every response closes its connection; every request is recorded ([`FakeHub::seen`]).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `HEAD` or `GET`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

struct Entry {
    content: Vec<u8>,
    lfs: bool,
    /// What the CDN serves (differs from `content` for a corrupted file).
    served: Vec<u8>,
    cut_next: bool,
}

#[derive(Default)]
struct State {
    commit: String,
    files: Mutex<HashMap<String, Entry>>,
    renamed: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    ignore_ranges: AtomicBool,
    stop: AtomicBool,
}

/// The running server; stops when dropped.
pub struct FakeHub {
    addr: SocketAddr,
    state: Arc<State>,
}

/// Hex SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeHub {
    /// Starts a server whose repos are all at `commit`.
    pub fn start(commit: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            commit: commit.to_string(),
            ..State::default()
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let st = st.clone();
                std::thread::spawn(move || handle(stream, &st, addr));
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `content` as `file` of `repo` (through the CDN redirect when `lfs`).
    pub fn add(&self, repo: &str, file: &str, content: &[u8], lfs: bool) {
        let entry = Entry {
            content: content.to_vec(),
            lfs,
            served: content.to_vec(),
            cut_next: false,
        };
        self.files().insert(format!("{repo}/{file}"), entry);
    }

    /// Makes the CDN serve `bytes` for `file` while the Hub still announces the original.
    pub fn corrupt(&self, repo: &str, file: &str, bytes: &[u8]) {
        if let Some(e) = self.files().get_mut(&format!("{repo}/{file}")) {
            e.served = bytes.to_vec();
        }
    }

    /// Cuts the next CDN download of `file` after half of its body.
    pub fn cut_next(&self, repo: &str, file: &str) {
        if let Some(e) = self.files().get_mut(&format!("{repo}/{file}")) {
            e.cut_next = true;
        }
    }

    /// Answers every request with the whole file, as a server without Range support does.
    pub fn ignore_ranges(&self) {
        self.state.ignore_ranges.store(true, Ordering::SeqCst);
    }

    /// Answers requests for `old` with a relative redirect to `new`.
    pub fn rename(&self, old: &str, new: &str) {
        let mut r = self.state.renamed.lock().expect("lock");
        r.insert(old.to_string(), new.to_string());
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.state.files.lock().expect("lock")
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (a cut transfer).
    cut_at: Option<usize>,
}

fn reply(status: u16, headers: Vec<(&str, String)>, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        body,
        cut_at: None,
    }
}

fn handle(stream: TcpStream, st: &State, addr: SocketAddr) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    st.seen.lock().expect("lock").push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
    });
    let honoured = range
        .as_deref()
        .filter(|_| !st.ignore_ranges.load(Ordering::SeqCst));
    let r = route(st, addr, &path, honoured);
    send(stream, &method, r);
}

fn route(st: &State, addr: SocketAddr, path: &str, range: Option<&str>) -> Reply {
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let mut files = st.files.lock().expect("lock");
        let Some(e) = files.values_mut().find(|e| sha256(&e.content) == sha) else {
            return reply(404, vec![], b"no such blob".to_vec());
        };
        let mut r = serve_bytes(&e.served, range);
        if e.cut_next && r.body.len() > 1 {
            e.cut_next = false;
            r.cut_at = Some(r.body.len() / 2);
        }
        return r;
    }
    let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return reply(404, vec![("x-error-code", "RepoNotFound".into())], vec![]);
    };
    if let Some(new) = st.renamed.lock().expect("lock").get(repo) {
        let loc = format!("/{new}/resolve/{rest}");
        return reply(307, vec![("Location", loc)], vec![]);
    }
    let Some((rev, file)) = rest.split_once('/') else {
        return reply(404, vec![], vec![]);
    };
    let commit = st.commit.clone();
    if rev != "main" && rev != commit {
        return reply(
            404,
            vec![("x-error-code", "RevisionNotFound".into())],
            vec![],
        );
    }
    let files = st.files.lock().expect("lock");
    let Some(e) = files.get(&format!("{repo}/{file}")) else {
        let headers = vec![
            ("x-error-code", "EntryNotFound".into()),
            ("x-error-message", "Entry not found".into()),
            ("x-repo-commit", commit),
        ];
        return reply(404, headers, b"Entry not found".to_vec());
    };
    let sha = sha256(&e.content);
    if e.lfs {
        let headers = vec![
            ("Location", format!("http://{addr}/cdn/{sha}")),
            ("x-repo-commit", commit),
            ("x-linked-etag", format!("\"{sha}\"")),
            ("x-linked-size", e.content.len().to_string()),
            // The LFS pointer's own git oid: a client must prefer x-linked-etag.
            ("ETag", format!("\"{}\"", &sha256(sha.as_bytes())[..40])),
        ];
        return reply(302, headers, vec![]);
    }
    let mut r = serve_bytes(&e.content, range);
    r.headers.push(("x-repo-commit".into(), commit));
    r.headers
        .push(("ETag".into(), format!("\"{}\"", &sha[..40])));
    r
}

/// 200 with the bytes, or 206 from `bytes=N-` with `Content-Range`, or 416 past the end.
fn serve_bytes(bytes: &[u8], range: Option<&str>) -> Reply {
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        None => reply(200, vec![], bytes.to_vec()),
        Some(n) if n < bytes.len() => {
            let cr = format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len());
            reply(206, vec![("Content-Range", cr)], bytes[n..].to_vec())
        }
        Some(_) => {
            let cr = format!("bytes */{}", bytes.len());
            reply(416, vec![("Content-Range", cr)], vec![])
        }
    }
}

fn send(mut stream: TcpStream, method: &str, r: Reply) {
    let reason = match r.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", r.status);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body.len()
    ));
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let n = r.cut_at.unwrap_or(r.body.len());
        let _ = stream.write_all(&r.body[..n]);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}
