//! The fetchers against [`FakeHub`], a loopback server answering like the Hub. Endpoint and
//! caches are passed in (no test touches the environment or the real network).

use super::hub::{Hub, HubConfig, HubError, blob_path, snapshot_path};
use super::loopback::{FakeHub, sha256};
use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "owner/model";

/// A fresh temporary folder for one test.
fn tmp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("tweedie-xtask-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        endpoint: endpoint.to_string(),
        cache: cache.to_path_buf(),
        token: None,
        offline: false,
        retries: 0,
        progress: false,
        env_proxy: false,
    }
}

fn settings(endpoint: &str, root: &Path) -> Settings {
    Settings {
        hub: config(endpoint, &root.join("hf")),
        tweedie_cache: root.join("tweedie"),
        ffhq_url: None,
    }
}

/// Deterministic bytes that are not all alike.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn cdn_gets(hub: &FakeHub) -> Vec<Option<String>> {
    hub.seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.starts_with("/cdn/"))
        .map(|s| s.range)
        .collect()
}

#[test]
fn fresh_download_fills_the_cache_as_huggingface_hub_does() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(300_000);
    let config_json = br#"{"sample_size": 32}"#.to_vec();
    server.add(REPO, "weights.safetensors", &weights, true);
    server.add(REPO, "config.json", &config_json, false);
    let cache = tmp("fresh");
    let hub = Hub::new(config(&server.endpoint(), &cache));

    let got = hub.get(REPO, "main", "weights.safetensors").unwrap();
    let repo_dir = cache.join("models--owner--model");
    let sha = sha256(&weights);
    assert_eq!(got.commit, COMMIT);
    assert_eq!(
        got.path,
        repo_dir
            .join("snapshots")
            .join(COMMIT)
            .join("weights.safetensors")
    );
    assert_eq!(std::fs::read(&got.path).unwrap(), weights);
    // The snapshot entry is a relative link to the blob named by the SHA-256 (x-linked-etag).
    assert_eq!(
        std::fs::read_link(&got.path).unwrap(),
        PathBuf::from("../../blobs").join(&sha)
    );
    assert_eq!(
        std::fs::read(repo_dir.join("blobs").join(&sha)).unwrap(),
        weights
    );
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    assert!(
        !repo_dir
            .join("blobs")
            .join(format!("{sha}.incomplete"))
            .exists()
    );
    assert!(
        cache
            .join(".locks/models--owner--model")
            .join(format!("{sha}.lock"))
            .exists()
    );
    // Metadata by HEAD on the resolve URL, bytes from the CDN location, no Range for a fresh file.
    let seen = server.seen();
    assert_eq!(seen[0].method, "HEAD");
    assert_eq!(
        seen[0].path,
        "/owner/model/resolve/main/weights.safetensors"
    );
    assert_eq!(cdn_gets(&server), vec![None]);

    // A regular (non-LFS) file: served by the resolve URL itself, blob named by its ETag.
    let got = hub.get(REPO, "main", "config.json").unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), config_json);
    let etag = &sha256(&config_json)[..40];
    assert_eq!(
        std::fs::read_link(&got.path).unwrap(),
        PathBuf::from("../../blobs").join(etag)
    );
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(200_000);
    server.add(REPO, "w.bin", &weights, true);
    server.cut_next(REPO, "w.bin");
    let cache = tmp("resume");
    let hub = Hub::new(config(&server.endpoint(), &cache));

    let err = hub.get(REPO, "main", "w.bin").unwrap_err();
    assert!(matches!(err, HubError::Cut { .. }), "{err}");
    assert!(err.to_string().contains("run again to resume"), "{err}");
    let part = PathBuf::from(format!(
        "{}.incomplete",
        blob_path(&cache, REPO, &sha256(&weights)).display()
    ));
    let have = std::fs::metadata(&part).unwrap().len();
    assert!(
        have > 0 && have < weights.len() as u64,
        "partial file of {have} bytes"
    );
    assert!(!snapshot_path(&cache, REPO, COMMIT, "w.bin").exists());

    // The second run asks only for the rest and completes the file.
    let got = hub.get(REPO, "main", "w.bin").unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), weights);
    assert_eq!(
        cdn_gets(&server),
        vec![None, Some(format!("bytes={have}-"))]
    );
    assert!(!part.exists());
}

#[test]
fn a_cut_download_is_resumed_in_the_same_run_when_retries_allow() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(100_000);
    server.add(REPO, "w.bin", &weights, true);
    server.cut_next(REPO, "w.bin");
    let cache = tmp("retry");
    let mut cfg = config(&server.endpoint(), &cache);
    cfg.retries = 1;
    let got = Hub::new(cfg).get(REPO, "main", "w.bin").unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), weights);
    let gets = cdn_gets(&server);
    assert_eq!(gets.len(), 2);
    assert!(
        gets[1].as_deref().is_some_and(|r| r.starts_with("bytes=")),
        "{gets:?}"
    );
}

#[test]
fn a_server_that_ignores_the_range_gets_the_file_written_from_the_start() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(80_000);
    server.add(REPO, "w.bin", &weights, true);
    server.cut_next(REPO, "w.bin");
    server.ignore_ranges();
    let cache = tmp("norange");
    let hub = Hub::new(config(&server.endpoint(), &cache));
    assert!(hub.get(REPO, "main", "w.bin").is_err());
    // The resume asks for a range, gets a 200 with the whole file, and starts over.
    let got = hub.get(REPO, "main", "w.bin").unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), weights);
    assert!(cdn_gets(&server)[1].is_some());
}

#[test]
fn a_corrupted_download_is_refused_and_nothing_is_kept() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(50_000);
    let mut bad = weights.clone();
    bad[1234] ^= 0xff;
    server.add(REPO, "w.bin", &weights, true);
    server.corrupt(REPO, "w.bin", &bad);
    let cache = tmp("corrupt");
    let hub = Hub::new(config(&server.endpoint(), &cache));

    let err = hub.get(REPO, "main", "w.bin").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("SHA-256 mismatch")
            && msg.contains(&sha256(&weights))
            && msg.contains(&sha256(&bad)),
        "{msg}"
    );
    let blob = blob_path(&cache, REPO, &sha256(&weights));
    assert!(!snapshot_path(&cache, REPO, COMMIT, "w.bin").exists());
    assert!(!blob.exists());
    assert!(!PathBuf::from(format!("{}.incomplete", blob.display())).exists());
    assert!(super::hub::cached_file(&cache, REPO, "main", "w.bin").is_none());
}

#[test]
fn a_cached_file_is_not_downloaded_again() {
    let server = FakeHub::start(COMMIT);
    let weights = bytes(10_000);
    server.add(REPO, "w.bin", &weights, true);
    let cache = tmp("cached");
    let hub = Hub::new(config(&server.endpoint(), &cache));
    hub.get(REPO, "main", "w.bin").unwrap();
    let before = server.seen().len();
    let again = hub.get(REPO, "main", "w.bin").unwrap();
    assert_eq!(std::fs::read(&again.path).unwrap(), weights);
    assert_eq!(
        server.seen().len(),
        before,
        "a cached file makes no request"
    );

    // A blob already there under another ref: one HEAD, no download.
    std::fs::remove_file(cache.join("models--owner--model/refs/main")).unwrap();
    std::fs::remove_dir_all(cache.join("models--owner--model/snapshots")).unwrap();
    hub.get(REPO, "main", "w.bin").unwrap();
    assert_eq!(cdn_gets(&server).len(), 1);
}

#[cfg(unix)]
#[test]
fn a_cache_written_by_huggingface_hub_is_used_without_network() {
    // The layout huggingface_hub writes, by hand; the endpoint is a closed port.
    let cache = tmp("hfcache");
    let repo_dir = cache.join("models--google--ddpm-cifar10-32");
    let commit = "a".repeat(40);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), &commit).unwrap();
    let snap = repo_dir.join("snapshots").join(&commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (file, blob) in [
        (DIFFUSERS_CONFIG, "c".repeat(40)),
        (DIFFUSERS_SCHEDULER, "d".repeat(40)),
        (DIFFUSERS_SAFETENSORS, "e".repeat(64)),
    ] {
        std::fs::write(repo_dir.join("blobs").join(&blob), file).unwrap();
        std::os::unix::fs::symlink(PathBuf::from("../../blobs").join(&blob), snap.join(file))
            .unwrap();
    }
    let s = Settings {
        hub: config(&closed_port_endpoint(), &cache),
        tweedie_cache: tmp("hfcache-tweedie"),
        ffhq_url: None,
    };
    assert_eq!(local_model_in(&s, "cifar10"), Some(snap.clone()));
    assert_eq!(fetch_in(&s, "cifar10", None).unwrap(), snap);
    assert_eq!(local_model_in(&s, "celebahq"), None);
}

#[test]
fn a_missing_safetensors_falls_back_to_the_bin_weights() {
    let server = FakeHub::start(COMMIT);
    let repo = "google/ddpm-cifar10-32";
    server.add(
        repo,
        DIFFUSERS_CONFIG,
        br#"{"_class_name": "UNet2DModel"}"#,
        false,
    );
    server.add(
        repo,
        DIFFUSERS_SCHEDULER,
        br#"{"_class_name": "DDPMScheduler"}"#,
        false,
    );
    server.add(repo, DIFFUSERS_BIN, &bytes(20_000), true);
    let root = tmp("fallback");
    let s = settings(&server.endpoint(), &root);

    let dir = fetch_in(&s, "cifar10", None).unwrap();
    let repo_dir = s.hub.cache.join("models--google--ddpm-cifar10-32");
    assert_eq!(dir, repo_dir.join("snapshots").join(COMMIT));
    assert_eq!(
        std::fs::read(dir.join(DIFFUSERS_BIN)).unwrap(),
        bytes(20_000)
    );
    assert!(dir.join(DIFFUSERS_CONFIG).exists() && dir.join(DIFFUSERS_SCHEDULER).exists());
    assert!(!dir.join(DIFFUSERS_SAFETENSORS).exists());
    // The 404 is remembered as huggingface_hub does, so the next run asks nothing.
    assert!(
        repo_dir
            .join(".no_exist")
            .join(COMMIT)
            .join(DIFFUSERS_SAFETENSORS)
            .exists()
    );
    let asked_for_safetensors = server
        .seen()
        .iter()
        .any(|r| r.path.ends_with(DIFFUSERS_SAFETENSORS));
    assert!(asked_for_safetensors);
    // The later files were asked for at the commit the first one named.
    assert!(
        server
            .seen()
            .iter()
            .any(|r| r.path == format!("/{repo}/resolve/{COMMIT}/{DIFFUSERS_BIN}"))
    );
    assert_eq!(local_model_in(&s, "cifar10"), Some(dir.clone()));
    let before = server.seen().len();
    assert_eq!(fetch_in(&s, "cifar10", None).unwrap(), dir);
    assert_eq!(server.seen().len(), before);
}

#[test]
fn a_renamed_repo_is_followed_through_its_relative_redirect() {
    let server = FakeHub::start(COMMIT);
    server.add("owner/new-name", "w.bin", &bytes(1000), true);
    server.rename("owner/old-name", "owner/new-name");
    let cache = tmp("renamed");
    let got = Hub::new(config(&server.endpoint(), &cache))
        .get("owner/old-name", "main", "w.bin")
        .unwrap();
    // Cached under the name asked for, as huggingface_hub does.
    assert!(got.path.starts_with(cache.join("models--owner--old-name")));
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes(1000));
}

/// An endpoint on a loopback port that nothing listens on: connections are refused.
fn closed_port_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn offline_fails_within_seconds_and_names_where_to_put_the_files() {
    let root = tmp("offline");
    let s = settings(&closed_port_endpoint(), &root);
    for name in ["ffhq", "celebahq"] {
        let started = Instant::now();
        let err = format!("{:#}", fetch_in(&s, name, None).unwrap_err());
        assert!(
            started.elapsed().as_secs() < 5,
            "{name}: {:?}",
            started.elapsed()
        );
        let m = model(name).unwrap();
        let manual = manual_path(&s, m);
        assert!(err.contains("could not reach"), "{err}");
        assert!(err.contains(&manual.display().to_string()), "{err}");
        assert!(err.contains(&format!("/{}/resolve/main/", m.repo)), "{err}");
    }
    assert!(
        !s.hub
            .cache
            .join("models--deepinv--diffunet/snapshots")
            .exists()
    );

    // HF_HUB_OFFLINE: the cache only, no connection tried.
    let mut s = s;
    s.hub.offline = true;
    let err = format!("{:#}", fetch_in(&s, "cifar10", None).unwrap_err());
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("tweedie/cifar10"),
        "{err}"
    );

    // lpips-vgg: its two inputs are plain URLs, through the same client.
    let err = format!(
        "{:#}",
        fetch_in(&s, "lpips-vgg", Some(&closed_port_endpoint())).unwrap_err()
    );
    assert!(
        err.contains("could not reach") && err.contains("lpips_v0.1_vgg.pth"),
        "{err}"
    );
}

#[test]
fn a_copy_put_by_hand_is_taken_first() {
    let root = tmp("manual");
    let s = settings(&closed_port_endpoint(), &root);
    let dir = s.tweedie_cache.join("church");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [DIFFUSERS_CONFIG, DIFFUSERS_SCHEDULER, DIFFUSERS_BIN] {
        std::fs::write(dir.join(f), b"{}").unwrap();
    }
    assert_eq!(local_model_in(&s, "church"), Some(dir.clone()));
    assert_eq!(fetch_in(&s, "church", None).unwrap(), dir);
    assert_eq!(local_model_in(&s, "ffhq"), None);
    assert!(fetch_in(&s, "nonsense", None).is_err());
}

#[test]
fn the_ffhq_checkpoint_is_fetched_from_the_hub_and_checked_for_its_keys() {
    // The small ADM fixture stands in for diffusion_ffhq_10m.pt: downloaded and verified by
    // SHA-256, then refused by the FFHQ-256 key check (it is another config).
    let fixture = std::fs::read(root_fixture("model.pt")).unwrap();
    let server = FakeHub::start(COMMIT);
    server.add("deepinv/diffunet", "diffusion_ffhq_10m.pt", &fixture, true);
    let root = tmp("ffhq");
    let s = settings(&server.endpoint(), &root);
    let err = format!("{:#}", fetch_in(&s, "ffhq", None).unwrap_err());
    assert!(err.contains("not the FFHQ-256 ADM checkpoint"), "{err}");
    let path = snapshot_path(
        &s.hub.cache,
        "deepinv/diffunet",
        COMMIT,
        "diffusion_ffhq_10m.pt",
    );
    assert_eq!(std::fs::read(&path).unwrap(), fixture);
    assert_eq!(local_model_in(&s, "ffhq"), Some(path));

    // --url / TWEEDIE_FFHQ_URL: a direct link, into tweedie's cache.
    let url = format!("{}/cdn/{}", server.endpoint(), sha256(&fixture));
    let err = format!("{:#}", fetch_in(&s, "ffhq", Some(&url)).unwrap_err());
    assert!(err.contains("not the FFHQ-256 ADM checkpoint"), "{err}");
    assert!(err.contains("was deleted again"), "{err}");
    assert!(!s.tweedie_cache.join("ffhq_10m.pt").exists());
}

#[test]
fn plain_url_downloads_check_the_sha256_prefix() {
    let server = FakeHub::start(COMMIT);
    let data = bytes(5000);
    server.add(REPO, "x", &data, true);
    let url = format!("{}/cdn/{}", server.endpoint(), sha256(&data));
    let dir = tmp("plain");
    let hub = Hub::new(config(&server.endpoint(), &dir));
    hub.download_url(&url, &dir.join("ok.pth"), Some(&sha256(&data)[..8]))
        .unwrap();
    assert_eq!(std::fs::read(dir.join("ok.pth")).unwrap(), data);
    let err = hub
        .download_url(&url, &dir.join("bad.pth"), Some("00000000"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    assert!(!dir.join("bad.pth").exists() && !dir.join("bad.pth.incomplete").exists());
}

#[test]
fn settings_read_the_hub_and_tweedie_variables() {
    let vars = |pairs: &[(&str, &str)]| -> Settings {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    };
    let s = vars(&[("HOME", "/home/u")]);
    assert_eq!(s.hub.endpoint, "https://huggingface.co");
    assert_eq!(s.hub.cache, PathBuf::from("/home/u/.cache/huggingface/hub"));
    assert_eq!(s.tweedie_cache, PathBuf::from("/home/u/.cache/tweedie"));
    assert!(!s.hub.offline && s.hub.token.is_none() && s.ffhq_url.is_none());

    let s = vars(&[
        ("HOME", "/home/u"),
        ("XDG_CACHE_HOME", "/x"),
        ("HF_ENDPOINT", "http://mirror:8080/"),
    ]);
    assert_eq!(s.hub.endpoint, "http://mirror:8080");
    assert_eq!(s.hub.cache, PathBuf::from("/x/huggingface/hub"));
    assert_eq!(s.tweedie_cache, PathBuf::from("/x/tweedie"));

    let s = vars(&[
        ("HF_HOME", "/hf"),
        ("TWEEDIE_CACHE", "/t"),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    assert_eq!(s.hub.cache, PathBuf::from("/hf/hub"));
    assert_eq!(s.tweedie_cache, PathBuf::from("/t"));
    assert!(s.hub.offline);

    let s = vars(&[
        ("HF_HOME", "/hf"),
        ("HF_HUB_CACHE", "/cache"),
        ("HF_TOKEN", "hf_x"),
        ("TWEEDIE_FFHQ_URL", "http://h/f.pt"),
    ]);
    assert_eq!(s.hub.cache, PathBuf::from("/cache"));
    assert_eq!(s.hub.token.as_deref(), Some("hf_x"));
    assert_eq!(s.ffhq_url.as_deref(), Some("http://h/f.pt"));

    // The real environment goes through the same code.
    assert_eq!(
        Settings::from_env(),
        Settings::from_lookup(|k| std::env::var(k).ok())
    );
}

#[cfg(unix)]
#[test]
fn the_ffhq_config_is_written_beside_the_checkpoint_but_never_through_a_link() {
    let dir = tmp("config");
    let ckpt = dir.join("diffusion_ffhq_10m.pt");
    std::fs::write(&ckpt, b"x").unwrap();
    let p = write_ffhq_config_in(&ckpt, &dir.join("fallback")).unwrap();
    assert_eq!(p, dir.join("diffusion_ffhq_10m.json"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(cfg["image_size"], 256);
    let blob = dir.join("blob");
    std::fs::write(&blob, b"keep").unwrap();
    std::fs::remove_file(&p).unwrap();
    std::os::unix::fs::symlink(&blob, &p).unwrap();
    let q = write_ffhq_config_in(&ckpt, &dir.join("fallback")).unwrap();
    assert_eq!(q, dir.join("fallback/ffhq_10m.json"));
    assert_eq!(std::fs::read(&blob).unwrap(), b"keep");
}

#[test]
fn a_wrong_checkpoint_is_rejected_by_the_ffhq_check() {
    let fixture = root_fixture("model.safetensors");
    let err = format!("{:#}", verify_ffhq(&fixture).unwrap_err());
    assert!(
        err.contains("not the FFHQ-256") && err.contains("missing keys"),
        "{err}"
    );
}

fn root_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/adm")
        .join(name)
}
