//! Absurd UNet configs are refused from the config alone (checked arithmetic, no allocation),
//! on every path that builds a network; real configs pass and their parameter count is exact.

use burn::tensor::Device;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};
use tweedie_unet::{UNet, UNetConfig, WeightMap};

/// Counts the bytes each thread allocates, to check a refusal allocates (almost) nothing.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get().saturating_add(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f`, returning its result, the bytes it allocated on this thread and its time.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let before = ALLOCATED.with(Cell::get);
    let start = Instant::now();
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before, start.elapsed())
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/adm")
        .join(name)
}

/// The three configs of the issue: JSON as a user would write it.
const ABSURD: [(&str, &str); 3] = [
    (
        r#"{"image_size": 64, "num_channels": 1000000000}"#,
        "parameters",
    ),
    (
        r#"{"image_size": 64, "num_res_blocks": 1000000}"#,
        "parameters",
    ),
    (
        r#"{"image_size": 65536, "channel_mult": "1,1,2,2,4,4", "attention_resolutions": "32768",
            "num_head_channels": 64}"#,
        "",
    ),
];

#[test]
fn absurd_configs_are_refused_from_json() {
    for (json, what) in ABSURD {
        let (r, bytes, time) = measured(|| UNetConfig::from_json_str(json));
        let err = r.expect_err(json).to_string();
        assert!(err.contains(what), "{json}: {err}");
        assert!(err.chars().any(|c| c.is_ascii_digit()), "{err}");
        assert!(bytes < 1 << 20, "{json}: allocated {bytes} bytes");
        assert!(time < Duration::from_secs(1), "{json}: took {time:?}");
        println!("{json}\n  → {err}");
    }
    // The image-size case is refused for memory, with the amount.
    let err = UNetConfig::from_json_str(ABSURD[2].0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("GiB") || err.contains("overflows"), "{err}");
}

#[test]
fn absurd_configs_are_refused_by_every_build_path() {
    let device = Device::flex();
    // Configs made in code (not through JSON) reach `UNet::init`/`load` unvalidated.
    let configs: Vec<UNetConfig> = ABSURD
        .iter()
        .map(|(json, _)| serde_json::from_str(json).unwrap())
        .collect();
    for cfg in &configs {
        let (r, bytes, time) = measured(|| UNet::init(cfg, 0, &device));
        assert!(r.is_err(), "init accepted {cfg:?}");
        assert!(bytes < 1 << 20, "init allocated {bytes} bytes");
        assert!(time < Duration::from_secs(1), "init took {time:?}");
        let (r, bytes, _) =
            measured(|| UNet::from_weights(cfg, &mut WeightMap::default(), &device));
        assert!(r.is_err());
        assert!(bytes < 1 << 20, "from_weights allocated {bytes} bytes");
        assert!(cfg.validate().is_err());
        assert!(cfg.estimated_memory_bytes().is_err() || cfg.validate().is_err());
    }
    // A limit far below a real config's needs is enforced too.
    let err = UNetConfig::ffhq256()
        .validate_with_memory_limit(1 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GiB") && err.contains("93563910 parameters"),
        "{err}"
    );
}

#[test]
fn real_configs_pass_with_exact_parameter_counts() {
    // FFHQ-256 (DPS's ffhq_10m.pt): 93 563 910 parameters (tests/parity.rs builds it).
    let ffhq = UNetConfig::ffhq256();
    ffhq.validate().unwrap();
    assert_eq!(ffhq.parameter_count().unwrap(), 93_563_910);
    let mem = ffhq.estimated_memory_bytes().unwrap();
    println!(
        "FFHQ-256: estimated forward pass at batch 1: {} MiB",
        mem >> 20
    );
    assert!((400 << 20..4 << 30).contains(&mem), "{mem}");
    // The tiny ADM fixture: its recorded count, and the built network's.
    let cfg = UNetConfig::from_json_file(fixture("config.json")).unwrap();
    assert_eq!(cfg.parameter_count().unwrap(), 1_422_278);
    let device = Device::flex();
    assert_eq!(
        UNet::init(&cfg, 0, &device).unwrap().num_parameters(),
        1_422_278
    );
    // Other layouts: plain up/down convs, additive timestep, several blocks, head counts.
    let variants = [
        r#"{"image_size": 32, "num_channels": 32, "num_res_blocks": 2, "channel_mult": "1,2",
            "attention_resolutions": "16", "num_heads": 2, "use_scale_shift_norm": false}"#,
        r#"{"image_size": 16, "num_channels": 64, "num_res_blocks": 3, "channel_mult": "1,1,2",
            "attention_resolutions": "", "num_head_channels": 32, "resblock_updown": true,
            "learn_sigma": true}"#,
        r#"{"image_size": 8, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "2",
            "attention_resolutions": "8", "num_heads": 4, "num_heads_upsample": 2}"#,
    ];
    for json in variants {
        let cfg = UNetConfig::from_json_str(json).unwrap();
        let built = UNet::init(&cfg, 0, &device).unwrap().num_parameters();
        assert_eq!(cfg.parameter_count().unwrap(), built as u128, "{json}");
    }
}

#[test]
fn inconsistent_configs_are_refused_not_panicking() {
    for json in [
        // 65 levels: 2^64 overflows.
        &format!(
            r#"{{"image_size": 64, "channel_mult": "{}"}}"#,
            vec!["1"; 65].join(",")
        ),
        // Heads that do not divide the attention width (reshape would panic).
        r#"{"image_size": 64, "num_channels": 96, "num_heads": 5}"#,
        r#"{"image_size": 64, "num_heads_upsample": 3}"#,
        // Fractional or absurd attention resolutions, bad dropout.
        r#"{"image_size": 64, "attention_resolutions": "16.5"}"#,
        r#"{"image_size": 64, "attention_resolutions": [1e300]}"#,
        r#"{"image_size": 64, "dropout": 1.0}"#,
        r#"{"image_size": 64, "channel_mult": [1e30]}"#,
        r#"{"image_size": 64, "channel_mult": [-1]}"#,
    ] {
        assert!(UNetConfig::from_json_str(json).is_err(), "{json}");
    }
}
