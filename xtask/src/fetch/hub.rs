//! A small Hugging Face Hub download client on [`ureq`]: the Hub's resolve protocol and its
//! on-disk cache, as `huggingface_hub.hf_hub_download` and the `hf-hub` crate use them, with
//! resumable, size- and SHA-256-checked downloads. `docs/fetch.md` says where each rule comes
//! from and what could not be checked against the real Hub.
//!
//! - Metadata: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}` without following redirects,
//!   except relative ones (a renamed repo). `x-repo-commit` is the commit, `x-linked-etag`
//!   (else `ETag`) the blob's name — the SHA-256 of an LFS file —, `x-linked-size` (else
//!   `Content-Length`) its size, and `Location` of a 3xx answer the CDN URL of the bytes.
//! - Cache (`HF_HUB_CACHE`): `models--{owner}--{name}/blobs/{etag}`, a relative symlink
//!   `snapshots/{commit}/{file}` → `../../blobs/{etag}`, `refs/{revision}` holding the commit,
//!   `.no_exist/{commit}/{file}` for a file the Hub answered 404 for, and a partial download in
//!   `blobs/{etag}.incomplete`, resumed with `Range: bytes=N-`.

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public Hub, used when `HF_ENDPOINT` is unset.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How long a connection (and a name lookup) may take before the Hub counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the Hub, and where its cache is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache: PathBuf,
    /// Bearer token sent to the endpoint (never to a CDN on another host): `HF_TOKEN`, else the
    /// file `$HF_HOME/token` (`HF_TOKEN_PATH`). None of the models fetched here needs one.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: answer from the cache only.
    pub offline: bool,
    /// How many times a download cut mid-body is resumed in the same run.
    pub retries: usize,
    /// Draw a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Go through the proxy named by `ALL_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` (with
    /// `NO_PROXY`), as ureq reads them; the tests' loopback server is reached directly.
    pub env_proxy: bool,
}

impl HubConfig {
    /// Reads the Hub's variables, as `huggingface_hub` does, from any lookup (the process
    /// environment, or a map in the tests).
    /// `HF_ENDPOINT`; `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, with
    /// `HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// `HF_TOKEN` / `HF_TOKEN_PATH`; `HF_HUB_OFFLINE`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let hf_home = get("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("huggingface")
        });
        let cache = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = get("HF_TOKEN").or_else(|| {
            let path = get("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        });
        Self {
            endpoint,
            cache,
            token,
            offline,
            retries: 3,
            progress: true,
            env_proxy: true,
        }
    }
}

/// Why a fetch failed. Every message names the URL or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No connection (refused, no route, DNS, TLS, timeout): the machine is offline.
    #[error("could not reach {url}: {reason}")]
    Unreachable {
        /// What was asked for.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// `HF_HUB_OFFLINE` is set and the file is not in the cache.
    #[error("HF_HUB_OFFLINE is set and {file} is not in the cache {cache}")]
    OfflineMode {
        /// The file asked for.
        file: String,
        /// The cache searched.
        cache: PathBuf,
    },
    /// The Hub answered 404 (no such repo, revision or file).
    #[error("{url}: not found (404{code})")]
    NotFound {
        /// What was asked for.
        url: String,
        /// `x-error-code`, as `: EntryNotFound`, when the Hub gave one.
        code: String,
    },
    /// Any other HTTP status that is not a success.
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        /// What was asked for.
        url: String,
        /// The status code.
        status: u16,
        /// What to do about it (401/403: a token).
        hint: &'static str,
    },
    /// The server did not answer as the Hub does.
    #[error("{url} did not answer like the Hugging Face Hub: {what} (check HF_ENDPOINT)")]
    NotHub {
        /// What was asked for.
        url: String,
        /// What was missing or malformed.
        what: String,
    },
    /// The body stopped early; the partial file is kept and the next run resumes it.
    #[error(
        "the download of {url} stopped at {have} bytes ({reason}); run again to resume from {part}"
    )]
    Cut {
        /// What was downloaded.
        url: String,
        /// Bytes now in the partial file.
        have: u64,
        /// The transport's error.
        reason: String,
        /// The partial file.
        part: PathBuf,
    },
    /// The bytes are not the file the Hub described; they were deleted.
    #[error("{file}: {what}; the download was deleted, nothing was kept")]
    Corrupt {
        /// The file.
        file: String,
        /// The mismatch (size or SHA-256, expected and found).
        what: String,
    },
    /// Another process holds the download lock of this blob.
    #[error("another download of the same file is running (lock {0})")]
    Locked(PathBuf),
    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl HubError {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `models--{owner}--{name}`: a model repo's folder in the cache.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// `{cache}/models--…/snapshots/{commit}/{file}`: where a cached file is read from.
pub fn snapshot_path(cache: &Path, repo: &str, commit: &str, file: &str) -> PathBuf {
    cache
        .join(repo_folder(repo))
        .join("snapshots")
        .join(commit)
        .join(file)
}

/// `{cache}/models--…/blobs/{etag}`.
pub fn blob_path(cache: &Path, repo: &str, etag: &str) -> PathBuf {
    cache.join(repo_folder(repo)).join("blobs").join(etag)
}

fn ref_path(cache: &Path, repo: &str, revision: &str) -> PathBuf {
    cache.join(repo_folder(repo)).join("refs").join(revision)
}

fn no_exist_path(cache: &Path, repo: &str, commit: &str, file: &str) -> PathBuf {
    cache
        .join(repo_folder(repo))
        .join(".no_exist")
        .join(commit)
        .join(file)
}

/// A 40-hex-digit git commit hash (used as a revision as it is, without a ref).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `revision` stands for in the cache: itself for a commit hash, else the content
/// of `refs/{revision}`.
pub fn cached_commit(cache: &Path, repo: &str, revision: &str) -> Option<String> {
    if is_commit_hash(revision) {
        return Some(revision.to_string());
    }
    let commit = std::fs::read_to_string(ref_path(cache, repo, revision)).ok()?;
    let commit = commit.trim();
    (!commit.is_empty()).then(|| commit.to_string())
}

/// The cached copy of `file` at `revision`, found without any network (a dangling link counts
/// as absent).
pub fn cached_file(cache: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let commit = cached_commit(cache, repo, revision)?;
    let path = snapshot_path(cache, repo, &commit, file);
    path.exists().then_some(path)
}

/// Whether the cache records that the Hub has no `file` at `revision` (`.no_exist`).
pub fn cached_no_exist(cache: &Path, repo: &str, revision: &str, file: &str) -> bool {
    cached_commit(cache, repo, revision)
        .is_some_and(|c| no_exist_path(cache, repo, &c, file).exists())
}

/// A file in the cache, and the commit it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `snapshots/{commit}/{file}`.
    pub path: PathBuf,
    /// The commit.
    pub commit: String,
}

/// What `HEAD …/resolve/…` says about a file.
#[derive(Debug)]
struct Meta {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where the bytes are: the CDN URL of a redirect, else the resolve URL itself.
    location: String,
}

/// The client: one agent for metadata (no redirects followed), one for bytes (redirects
/// followed), both with connect and read timeouts.
pub struct Hub {
    cfg: HubConfig,
    meta: ureq::Agent,
    data: ureq::Agent,
}

impl Hub {
    /// A client for `cfg`.
    pub fn new(cfg: HubConfig) -> Self {
        let proxy = if cfg.env_proxy {
            ureq::Proxy::try_from_env()
        } else {
            None
        };
        let agent = |redirects: u32| {
            ureq::Agent::config_builder()
                .proxy(proxy.clone())
                .http_status_as_error(false)
                .max_redirects(redirects)
                .timeout_resolve(Some(CONNECT_TIMEOUT))
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_recv_response(Some(Duration::from_secs(30)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .user_agent(format!("tweedie-xtask/{}", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        };
        Self {
            cfg,
            meta: agent(0),
            data: agent(10),
        }
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}` (a `/` in the revision escaped).
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{file}",
            self.cfg.endpoint,
            revision.replace('/', "%2F")
        )
    }

    /// `file` of model repo `repo` at `revision`, from the cache when it is there (no network
    /// at all), else downloaded into it: resumed from a partial download, checked against the
    /// Hub's size and SHA-256, and linked into the snapshot of the commit the Hub names.
    pub fn get(&self, repo: &str, revision: &str, file: &str) -> Result<Fetched, HubError> {
        let cache = &self.cfg.cache;
        if let Some(path) = cached_file(cache, repo, revision, file) {
            let commit = cached_commit(cache, repo, revision).unwrap_or_default();
            return Ok(Fetched { path, commit });
        }
        if self.cfg.offline {
            return Err(HubError::OfflineMode {
                file: format!("{repo}/{file}"),
                cache: cache.clone(),
            });
        }
        let url = self.resolve_url(repo, revision, file);
        let meta = match self.metadata(&url) {
            Err((err, Some(commit))) if matches!(err, HubError::NotFound { .. }) => {
                let marker = no_exist_path(cache, repo, &commit, file);
                if let Some(dir) = marker.parent() {
                    let _ = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&marker, b""));
                }
                return Err(err);
            }
            Err((err, _)) => return Err(err),
            Ok(meta) => meta,
        };
        let blob = blob_path(cache, repo, &meta.etag);
        if !blob_complete(&blob, meta.size) {
            self.download_blob(&meta, &blob, file)?;
        }
        let path = snapshot_path(cache, repo, &meta.commit, file);
        link_snapshot(&blob, &path, file)?;
        if revision != meta.commit {
            let r = ref_path(cache, repo, revision);
            if let Some(dir) = r.parent() {
                std::fs::create_dir_all(dir).map_err(HubError::io("creating", dir))?;
            }
            std::fs::write(&r, &meta.commit).map_err(HubError::io("writing", &r))?;
        }
        Ok(Fetched {
            path,
            commit: meta.commit,
        })
    }

    /// The file's metadata from `HEAD`, following relative redirects only. A 404 comes back
    /// with the commit the Hub named in it, if any (for the `.no_exist` marker).
    fn metadata(&self, url: &str) -> Result<Meta, (HubError, Option<String>)> {
        let mut current = url.to_string();
        for _ in 0..=10 {
            let mut req = self
                .meta
                .head(&current)
                .header("Accept-Encoding", "identity");
            if let Some(t) = &self.cfg.token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let resp = req.call().map_err(|e| (unreachable(&current, e), None))?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header("location");
            if (300..400).contains(&status) {
                let Some(loc) = location.as_deref() else {
                    return Err((not_hub(&current, "a redirect without Location"), None));
                };
                if is_relative(loc) {
                    current = join_relative(&current, loc);
                    continue;
                }
            } else if !(200..300).contains(&status) {
                let err = status_error(&current, status, header("x-error-code"));
                return Err((err, header("x-repo-commit")));
            }
            let commit = header("x-repo-commit")
                .ok_or_else(|| (not_hub(&current, "no x-repo-commit header"), None))?;
            let etag = header("x-linked-etag")
                .or_else(|| header("etag"))
                .map(|e| normalize_etag(&e))
                .filter(|e| !e.is_empty() && !e.contains(['/', '\\']))
                .ok_or_else(|| (not_hub(&current, "no usable ETag"), None))?;
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.trim().parse().ok());
            let location = if (300..400).contains(&status) {
                location.unwrap_or_default()
            } else {
                current.clone()
            };
            return Ok(Meta {
                commit: commit.trim().to_string(),
                etag,
                size,
                location,
            });
        }
        Err((not_hub(url, "more than 10 relative redirects"), None))
    }

    /// Downloads a blob under its lock into `{blob}.incomplete`, verifies it and moves it into
    /// place.
    fn download_blob(&self, meta: &Meta, blob: &Path, file: &str) -> Result<(), HubError> {
        let dir = blob.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(HubError::io("creating", dir))?;
        let lock_path = lock_path(&self.cfg.cache, blob);
        if let Some(d) = lock_path.parent() {
            std::fs::create_dir_all(d).map_err(HubError::io("creating", d))?;
        }
        let lock =
            std::fs::File::create(&lock_path).map_err(HubError::io("creating", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(HubError::Locked(lock_path));
        }
        if blob_complete(blob, meta.size) {
            return Ok(()); // another process finished it while we waited
        }
        let part = with_suffix(blob, ".incomplete");
        let auth = same_host(&meta.location, &self.cfg.endpoint);
        self.transfer(&meta.location, auth, &part, meta.size, file)?;
        verify(&part, file, meta.size, Some(&meta.etag), None)?;
        std::fs::rename(&part, blob).map_err(HubError::io("moving into place", blob))
    }

    /// Downloads a plain URL (not a Hub file) to `dest` through the same resumable transfer
    /// (`{dest}.incomplete`), checking the SHA-256 prefix when one is given.
    pub fn download_url(
        &self,
        url: &str,
        dest: &Path,
        sha256_prefix: Option<&str>,
    ) -> Result<(), HubError> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(HubError::io("creating", dir))?;
        }
        let part = with_suffix(dest, ".incomplete");
        let name = dest
            .file_name()
            .map_or_else(|| url.to_string(), |n| n.to_string_lossy().into_owned());
        self.transfer(url, false, &part, None, &name)?;
        verify(&part, &name, None, None, sha256_prefix)?;
        std::fs::rename(&part, dest).map_err(HubError::io("moving into place", dest))
    }

    /// [`Hub::transfer_once`], resumed up to `retries` times when the body is cut.
    fn transfer(
        &self,
        url: &str,
        auth: bool,
        part: &Path,
        size: Option<u64>,
        label: &str,
    ) -> Result<(), HubError> {
        let mut attempt = 0;
        loop {
            match self.transfer_once(url, auth, part, size, label, true) {
                Err(HubError::Cut { have, reason, .. }) if attempt < self.cfg.retries => {
                    attempt += 1;
                    eprintln!(
                        "fetch: {label} stopped at {} ({reason}); resuming ({attempt}/{})",
                        HumanBytes(have),
                        self.cfg.retries
                    );
                    std::thread::sleep(Duration::from_millis(200 * attempt as u64));
                }
                other => return other,
            }
        }
    }

    /// One GET of `url` into `part`, from `part`'s current length (`Range: bytes=N-`). A 200
    /// answer to a Range request (the server ignored it) starts the file over; a 416 (the
    /// partial file is not a prefix of this file) deletes it and starts over once.
    fn transfer_once(
        &self,
        url: &str,
        auth: bool,
        part: &Path,
        size: Option<u64>,
        label: &str,
        may_restart: bool,
    ) -> Result<(), HubError> {
        let mut have = std::fs::metadata(part).map_or(0, |m| m.len());
        if let Some(size) = size {
            if have == size {
                return Ok(());
            }
            if have > size {
                std::fs::remove_file(part).map_err(HubError::io("removing", part))?;
                have = 0;
            }
        }
        let mut req = self.data.get(url).header("Accept-Encoding", "identity");
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        if let (true, Some(t)) = (auth, &self.cfg.token) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| unreachable(url, e))?;
        let status = resp.status().as_u16();
        let start = match status {
            206 if content_range_start(&resp) == Some(have) => have,
            206 => return Err(not_hub(url, "a 206 answer for another range than asked")),
            200 => 0,
            416 if have > 0 && may_restart => {
                std::fs::remove_file(part).map_err(HubError::io("removing", part))?;
                return self.transfer_once(url, auth, part, size, label, false);
            }
            _ => return Err(status_error(url, status, None)),
        };
        let total = size.or_else(|| resp.body().content_length().map(|n| n + start));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(start > 0)
            .truncate(start == 0)
            .open(part)
            .map_err(HubError::io("opening", part))?;
        let bar = self.progress_bar(label, url, start, total);
        let result = copy_body(resp.body_mut().as_reader(), &mut file, &bar, part);
        bar.finish_and_clear();
        let written = result?;
        let now = start + written.copied;
        if let Some(reason) = written.error {
            return Err(HubError::Cut {
                url: url.to_string(),
                have: now,
                reason,
                part: part.to_path_buf(),
            });
        }
        match total {
            Some(total) if now < total => Err(HubError::Cut {
                url: url.to_string(),
                have: now,
                reason: format!("the server closed the connection before {total} bytes"),
                part: part.to_path_buf(),
            }),
            _ => Ok(()),
        }
    }

    fn progress_bar(&self, label: &str, url: &str, start: u64, total: Option<u64>) -> ProgressBar {
        let size = total.map_or_else(|| "size unknown".into(), |t| HumanBytes(t).to_string());
        let from = if start > 0 {
            format!(", resuming at {}", HumanBytes(start))
        } else {
            String::new()
        };
        eprintln!("fetch: downloading {label} ({size}{from}) from {url}");
        if !self.cfg.progress {
            return ProgressBar::hidden();
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar.set_position(start);
        bar
    }
}

/// Bytes copied, and the transport error that stopped the copy early, if any.
struct Copied {
    copied: u64,
    error: Option<String>,
}

/// Copies the body into the file; a read error ends the copy (the bytes so far are kept for a
/// resume), a write error is an error.
fn copy_body(
    mut body: impl Read,
    file: &mut std::fs::File,
    bar: &ProgressBar,
    part: &Path,
) -> Result<Copied, HubError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                file.flush().map_err(HubError::io("writing", part))?;
                return Ok(Copied {
                    copied,
                    error: Some(e.to_string()),
                });
            }
        };
        file.write_all(&buf[..n])
            .map_err(HubError::io("writing", part))?;
        copied += n as u64;
        bar.inc(n as u64);
    }
    file.flush().map_err(HubError::io("writing", part))?;
    Ok(Copied {
        copied,
        error: None,
    })
}

/// Checks a finished download: its size, then its SHA-256 against the ETag when the ETag is
/// one (64 hex digits: an LFS file) or against a known prefix. A mismatch deletes the file.
fn verify(
    part: &Path,
    file: &str,
    size: Option<u64>,
    etag: Option<&str>,
    sha256_prefix: Option<&str>,
) -> Result<(), HubError> {
    let corrupt = |what: String| {
        let _ = std::fs::remove_file(part);
        HubError::Corrupt {
            file: file.to_string(),
            what,
        }
    };
    let len = std::fs::metadata(part)
        .map_err(HubError::io("reading", part))?
        .len();
    if let Some(size) = size
        && len != size
    {
        return Err(corrupt(format!(
            "size mismatch: {len} bytes where the Hub announced {size} (x-linked-size)"
        )));
    }
    let etag_sha = etag.filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
    if etag_sha.is_none() && sha256_prefix.is_none() {
        return Ok(());
    }
    let digest = sha256_hex(part).map_err(HubError::io("reading", part))?;
    if let Some(want) = etag_sha
        && !digest.eq_ignore_ascii_case(want)
    {
        return Err(corrupt(format!(
            "SHA-256 mismatch: the bytes hash to {digest}, the Hub's x-linked-etag is {want}"
        )));
    }
    if let Some(prefix) = sha256_prefix
        && !digest.starts_with(&prefix.to_ascii_lowercase())
    {
        return Err(corrupt(format!(
            "SHA-256 mismatch: {digest} does not start with the expected {prefix}"
        )));
    }
    Ok(())
}

/// Hex SHA-256 of a file.
pub fn sha256_hex(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Links `snapshots/{commit}/{file}` to its blob by a relative path (`../../blobs/{etag}`, one
/// more `..` per folder in `file`), as `huggingface_hub` does; copies where links fail.
fn link_snapshot(blob: &Path, path: &Path, file: &str) -> Result<(), HubError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(HubError::io("creating", dir))?;
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(path).map_err(HubError::io("replacing", path))?;
    }
    let mut target = PathBuf::from("..");
    for _ in 0..file.matches('/').count() + 1 {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap_or_default());
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&target, path).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, path)
        .map(|_| ())
        .map_err(HubError::io("copying the blob to", path))
}

/// `{cache}/.locks/models--…/{etag}.lock`, where `huggingface_hub` keeps its locks.
fn lock_path(cache: &Path, blob: &Path) -> PathBuf {
    let repo = blob
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .unwrap_or_default();
    let name = blob.file_name().unwrap_or_default().to_string_lossy();
    cache.join(".locks").join(repo).join(format!("{name}.lock"))
}

fn blob_complete(blob: &Path, size: Option<u64>) -> bool {
    std::fs::metadata(blob).is_ok_and(|m| m.is_file() && size.is_none_or(|s| m.len() == s))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `"abc"` or `W/"abc"` → `abc`.
fn normalize_etag(etag: &str) -> String {
    let e = etag.trim();
    e.strip_prefix("W/")
        .unwrap_or(e)
        .trim_matches('"')
        .to_string()
}

fn is_relative(location: &str) -> bool {
    !(location.starts_with("http://")
        || location.starts_with("https://")
        || location.starts_with("//"))
}

/// `scheme://host` of `base` + an absolute path, or `base`'s folder + a relative one.
fn join_relative(base: &str, location: &str) -> String {
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|s| base[s..].find('/').map(|j| s + j))
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .unwrap_or(base.len());
        format!("{}/{location}", &base[..dir_end])
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

fn same_host(a: &str, b: &str) -> bool {
    host_of(a).eq_ignore_ascii_case(host_of(b))
}

fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

fn unreachable(url: &str, e: ureq::Error) -> HubError {
    HubError::Unreachable {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

fn not_hub(url: &str, what: &str) -> HubError {
    HubError::NotHub {
        url: url.to_string(),
        what: what.to_string(),
    }
}

fn status_error(url: &str, status: u16, code: Option<String>) -> HubError {
    if status == 404 {
        return HubError::NotFound {
            url: url.to_string(),
            code: code.map(|c| format!(": {c}")).unwrap_or_default(),
        };
    }
    let hint = match status {
        401 | 403 => " (a private or gated repo: set HF_TOKEN to a token with access)",
        429 => " (rate limited: wait and run again)",
        _ => "",
    };
    HubError::Status {
        url: url.to_string(),
        status,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_cache_paths_follow_the_hub() {
        assert_eq!(
            repo_folder("google/ddpm-cifar10-32"),
            "models--google--ddpm-cifar10-32"
        );
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(is_relative("/a/b") && !is_relative("https://cdn/x"));
        assert_eq!(
            join_relative(
                "http://h:1/old/repo/resolve/main/f",
                "/new/repo/resolve/main/f"
            ),
            "http://h:1/new/repo/resolve/main/f"
        );
        assert!(same_host(
            "https://huggingface.co/a",
            "https://huggingface.co"
        ));
        assert!(!same_host(
            "https://cdn-lfs.hf.co/a",
            "https://huggingface.co"
        ));
        assert!(is_commit_hash(&"a".repeat(40)) && !is_commit_hash("main"));
    }
}
