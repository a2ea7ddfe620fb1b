//! The diffusers `UNet2DModel` port against diffusers 0.42.1 itself: reference outputs of
//! three random-weight models (flat, flat with 2022-style attention keys, pipeline with
//! scale-shift and resnet resampling), the scheduler's ᾱ, the key sets of two hub configs,
//! and refusals of what is not implemented.

use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tweedie_unet::diffusers::{
    DiffusersError, DiffusersFiles, DiffusersModel, DiffusersUNet, SchedulerConfig, UNet2DConfig,
    check_parity,
};
use tweedie_unet::{Init, ParamSource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/diffusers")
        .join(name)
}

fn parity(name: &str, files: usize) {
    let reports = check_parity(&fixture(name), &Device::flex()).unwrap();
    assert_eq!(reports.len(), files, "{reports:?}");
    for r in &reports {
        eprintln!(
            "{name} {}: out max abs error {:e} over {} values, ᾱ max abs error {:e}",
            r.weights.file_name().unwrap().to_string_lossy(),
            r.out_error,
            r.values,
            r.alpha_bar_error
        );
        assert!(r.out_error <= 1e-4, "{name}: {r:?}");
        assert!(r.alpha_bar_error <= 1e-6, "{name}: {r:?}");
    }
}

#[test]
fn flat_ddpm_matches_diffusers_from_safetensors_and_bin() {
    parity("ddpm_flat", 2);
}

#[test]
fn legacy_attention_key_names_load_to_the_same_output() {
    parity("ddpm_flat_legacy_keys", 1);
}

#[test]
fn pipeline_layout_with_scale_shift_and_resnet_resampling_matches_diffusers() {
    parity("pipeline_scale_shift", 1);
}

/// Records every key and shape a build asks for, answering zeros.
#[derive(Default)]
struct Keys(BTreeMap<String, Vec<usize>>);

impl ParamSource for Keys {
    fn values(&mut self, key: &str, shape: &[usize], _init: Init) -> Vec<f32> {
        assert!(
            self.0.insert(key.to_string(), shape.to_vec()).is_none(),
            "{key} twice"
        );
        vec![0.0; shape.iter().product()]
    }
}

/// The hub model's config (the file's second line) and its key → shape list.
fn hub_keys(file: &str) -> (UNet2DConfig, BTreeMap<String, Vec<usize>>) {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    let mut lines = text.lines();
    lines.next();
    let config = lines.next().unwrap().trim_start_matches("# config: ");
    let config = UNet2DConfig::from_json_str(config).unwrap();
    let keys = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, s) = l.split_once(' ').unwrap();
            let shape = s
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_string(), shape)
        })
        .collect();
    (config, keys)
}

fn builds_exactly_the_hub_keys(file: &str, tensors: usize, parameters: usize) {
    let (config, want) = hub_keys(file);
    let mut got = Keys::default();
    let net = DiffusersUNet::build(&config, &mut got, &Device::flex());
    assert_eq!(want.len(), tensors);
    let missing: Vec<_> = want.keys().filter(|k| !got.0.contains_key(*k)).collect();
    let extra: Vec<_> = got.0.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, s) in &want {
        assert_eq!(&got.0[k], s, "{k}");
    }
    assert_eq!(net.num_parameters(), parameters);
}

#[test]
fn the_celebahq_256_hub_config_builds_its_450_keys() {
    builds_exactly_the_hub_keys("ddpm_celebahq_256_keys.txt", 450, 113_673_219);
}

#[test]
fn the_cifar10_32_hub_config_builds_its_keys() {
    builds_exactly_the_hub_keys("ddpm_cifar10_32_keys.txt", 328, 35_746_307);
}

fn config_error(edit: impl Fn(&mut serde_json::Value)) -> String {
    let text = std::fs::read_to_string(fixture("ddpm_flat/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    UNet2DConfig::from_json_str(&v.to_string())
        .unwrap_err()
        .to_string()
}

#[test]
fn unsupported_options_are_refused_by_name() {
    let e = config_error(|v| v["down_block_types"][1] = "CrossAttnDownBlock2D".into());
    assert!(
        e.contains("down_block_types") && e.contains("CrossAttnDownBlock2D"),
        "{e}"
    );
    let e = config_error(|v| v["up_block_types"][0] = "SkipUpBlock2D".into());
    assert!(e.contains("SkipUpBlock2D"), "{e}");
    let e = config_error(|v| v["time_embedding_type"] = "fourier".into());
    assert!(
        e.contains("time_embedding_type") && e.contains("fourier"),
        "{e}"
    );
    let e = config_error(|v| v["resnet_time_scale_shift"] = "spatial".into());
    assert!(e.contains("spatial"), "{e}");
    let e = config_error(|v| v["num_class_embeds"] = 10.into());
    assert!(e.contains("class"), "{e}");
    let e = config_error(|v| v["act_fn"] = "gelu".into());
    assert!(e.contains("act_fn") && e.contains("gelu"), "{e}");
    let e = config_error(|v| v["_class_name"] = "UNet2DConditionModel".into());
    assert!(e.contains("UNet2DConditionModel"), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_the_closest_known_one() {
    let e = config_error(|v| {
        let g = v
            .as_object_mut()
            .unwrap()
            .remove("norm_num_groups")
            .unwrap();
        v["norm_num_group"] = g;
    });
    assert!(
        e.contains("\"norm_num_group\"") && e.contains("\"norm_num_groups\""),
        "{e}"
    );
    let text = std::fs::read_to_string(fixture("ddpm_flat/scheduler_config.json")).unwrap();
    let e = SchedulerConfig::from_json_str(&text.replace("beta_schedule", "beta_schedul"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("beta_schedul") && e.contains("\"beta_schedule\""),
        "{e}"
    );
}

#[test]
fn schedulers_the_samplers_cannot_follow_are_refused() {
    let text = std::fs::read_to_string(fixture("ddpm_flat/scheduler_config.json")).unwrap();
    let refuse = |from: &str, to: &str| {
        let e = SchedulerConfig::from_json_str(&text.replace(from, to)).unwrap_err();
        assert!(matches!(e, DiffusersError::Unsupported(_)), "{e}");
        e.to_string()
    };
    assert!(refuse("\"epsilon\"", "\"v_prediction\"").contains("v_prediction"));
    assert!(refuse("\"linear\"", "\"sigmoid\"").contains("sigmoid"));
    assert!(refuse("\"fixed_small\"", "\"learned\"").contains("learned"));
    assert!(
        refuse(
            "\"rescale_betas_zero_snr\": false",
            "\"rescale_betas_zero_snr\": true"
        )
        .contains("rescale")
    );
}

#[test]
fn scaled_linear_and_trained_betas_give_the_betas_diffusers_computes() {
    let base = r#"{"_class_name": "DDPMScheduler", "num_train_timesteps": 10, "beta_start": 0.0001, "beta_end": 0.02"#;
    let scaled =
        SchedulerConfig::from_json_str(&format!("{base}, \"beta_schedule\": \"scaled_linear\"}}"))
            .unwrap()
            .schedule()
            .unwrap();
    // torch.linspace(√β_1, √β_T, T)²: the middle β of T = 10 is between the ends' roots.
    let (a, z) = (1e-4f64.sqrt(), 0.02f64.sqrt());
    for t in 1..=10 {
        let want = (a + (t - 1) as f64 / 9.0 * (z - a)).powi(2);
        assert!((scaled.beta[t] - want).abs() < 1e-9, "{t}");
    }
    let betas: Vec<f64> = (1..=10).map(|i| i as f64 * 1e-3).collect();
    let trained = SchedulerConfig::from_json_str(&format!(
        "{base}, \"trained_betas\": {}}}",
        serde_json::to_string(&betas).unwrap()
    ))
    .unwrap()
    .schedule()
    .unwrap();
    assert!((trained.alpha_bar[10] - betas.iter().map(|b| 1.0 - b).product::<f64>()).abs() < 1e-7);
    let short = SchedulerConfig::from_json_str(&format!("{base}, \"trained_betas\": [0.1, 0.2]}}"));
    assert!(short.unwrap_err().to_string().contains("trained_betas"));
}

#[test]
fn a_folder_without_weights_or_scheduler_says_which_file_is_missing() {
    let dir = std::env::temp_dir().join(format!("tweedie-diffusers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("ddpm_flat/config.json"), dir.join("config.json")).unwrap();
    let e = DiffusersFiles::find(&dir).unwrap_err().to_string();
    assert!(e.contains("scheduler_config.json"), "{e}");
    std::fs::copy(
        fixture("ddpm_flat/scheduler_config.json"),
        dir.join("scheduler_config.json"),
    )
    .unwrap();
    let e = DiffusersFiles::find(&dir).unwrap_err().to_string();
    assert!(e.contains("diffusion_pytorch_model"), "{e}");
    // Weights of another architecture: the key listing names what does not fit.
    std::fs::copy(
        fixture("pipeline_scale_shift/unet/diffusion_pytorch_model.safetensors"),
        dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let e = DiffusersModel::load_dir(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing keys") || e.contains("mis-shaped"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
