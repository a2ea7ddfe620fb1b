//! Parity with the reference guided-diffusion implementation on the tiny-ADM fixture, the
//! FFHQ-256 key/shape list, and strict checkpoint errors.

use burn::tensor::Device;
use std::path::{Path, PathBuf};
use tweedie_unet::{UNet, UNetConfig, WeightMap};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/adm")
        .join(name)
}

/// Max abs error of the UNet loaded from `weights` against the fixture's reference output.
fn parity_error(weights: &str) -> f32 {
    parity_error_on(weights, &Device::flex(), false)
}

/// The same on `device`; with `track`, the input requires a gradient (the autodiff path
/// DPS and training take, e.g. the composed attention).
fn parity_error_on(weights: &str, device: &Device, track: bool) -> f32 {
    let device = device.clone();
    let cfg = UNetConfig::from_json_file(fixture("config.json")).unwrap();
    let net = UNet::load(&cfg, fixture(weights), &device).unwrap();
    let io = WeightMap::load(fixture("io.safetensors")).unwrap();
    let mut io_raw = io.clone();
    let x_shape = io.shapes().find(|(k, _)| *k == "x").unwrap().1.clone();
    let out_shape = io.shapes().find(|(k, _)| *k == "out").unwrap().1.clone();
    let x = io_raw.take("x", &x_shape).unwrap();
    let want = io_raw.take("out", &out_shape).unwrap();
    let t = read_int_tensor(&fixture("io.safetensors"), "t");
    let xt = tweedie_core::tensor::from_vec(
        x,
        [x_shape[0], x_shape[1], x_shape[2], x_shape[3]],
        &device,
    );
    let xt = if track { xt.require_grad() } else { xt };
    let got = tweedie_core::tensor::to_vec(&net.forward(xt, &t));
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn read_int_tensor(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::I64);
    v.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
        .collect()
}

#[test]
fn fixture_parity_from_safetensors() {
    let err = parity_error("model.safetensors");
    eprintln!("ADM fixture parity (safetensors): max abs error {err:e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn fixture_parity_through_autodiff() {
    let err = parity_error_on("model.safetensors", &Device::flex().autodiff(), true);
    eprintln!("ADM fixture parity (autodiff, tracked input): max abs error {err:e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn fixture_parity_from_pytorch_pt() {
    let err = parity_error("model.pt");
    eprintln!("ADM fixture parity (.pt): max abs error {err:e}");
    assert!(err <= 1e-4, "{err}");
}

#[test]
fn ffhq256_config_has_exactly_the_checkpoint_keys_and_shapes() {
    let text = std::fs::read_to_string(fixture("ffhq_10m_keys.txt")).unwrap();
    let want: Vec<(String, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, s) = l.split_once('\t').unwrap();
            let dims = s
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_string(), dims)
        })
        .collect();
    assert_eq!(want.len(), 362);
    // Build on shapes only: a zero-filled map with the checkpoint's keys must load cleanly.
    let map = want
        .iter()
        .map(|(k, s)| (k.clone(), (s.clone(), vec![0f32; s.iter().product()])))
        .collect();
    let mut w = WeightMap::from_tensors("ffhq_10m_keys.txt", map);
    let net = UNet::from_weights(&UNetConfig::ffhq256(), &mut w, &Device::flex()).unwrap();
    assert_eq!(net.num_parameters(), 93_563_910);
    let exported: Vec<(String, Vec<usize>)> =
        net.export().into_iter().map(|(k, (s, _))| (k, s)).collect();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(exported, want_sorted);
}

#[test]
fn wrong_checkpoint_lists_missing_unexpected_and_misshaped_keys() {
    let device = Device::flex();
    let cfg = UNetConfig::from_json_file(fixture("config.json")).unwrap();
    let mut w = WeightMap::load(fixture("model.safetensors")).unwrap();
    let mut map: std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> = w
        .shapes()
        .map(|(k, s)| (k.clone(), (s.clone(), vec![0.0; s.iter().product()])))
        .collect();
    map.remove("out.2.weight");
    map.insert("extra.weight".into(), (vec![2], vec![0.0, 0.0]));
    map.insert("time_embed.0.bias".into(), (vec![3], vec![0.0; 3]));
    w = WeightMap::from_tensors("broken", map);
    let err = UNet::from_weights(&cfg, &mut w, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing keys") && err.contains("out.2.weight"),
        "{err}"
    );
    assert!(
        err.contains("unexpected keys") && err.contains("extra.weight"),
        "{err}"
    );
    assert!(
        err.contains("mis-shaped") && err.contains("time_embed.0.bias"),
        "{err}"
    );
    // A config that does not fit the fixture (different width) lists many keys, capped at 10.
    let mut other = cfg.clone();
    other.num_channels = 64;
    let err = UNet::load(&other, fixture("model.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("… and"), "{err}");
    // Unreadable files fail with the path.
    let bad = std::env::temp_dir().join(format!("tweedie-bad-{}.safetensors", std::process::id()));
    std::fs::write(&bad, b"garbage").unwrap();
    assert!(
        UNet::load(&cfg, &bad, &device)
            .unwrap_err()
            .to_string()
            .contains("tweedie-bad")
    );
    assert!(UNet::load(&cfg, "weights.bin.xyz", &device).is_err());
}

#[test]
fn save_then_load_round_trips() {
    let device = Device::flex();
    let cfg = UNetConfig::small(32, 32, &[1.0, 2.0], &[16]);
    let net = UNet::init(&cfg, 3, &device).unwrap();
    let dir = std::env::temp_dir().join(format!("tweedie-unet-{}", std::process::id()));
    let path = dir.join("model.safetensors");
    net.save(&path).unwrap();
    let cfg_back = UNetConfig::from_json_file(path.with_extension("json")).unwrap();
    assert_eq!(cfg_back, cfg);
    let back = UNet::load(&cfg_back, &path, &device).unwrap();
    assert_eq!(back.export(), net.export());
    std::fs::remove_dir_all(dir).ok();
}
