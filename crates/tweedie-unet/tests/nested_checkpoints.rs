//! Checkpoints whose state dict is nested (`{'state_dict': …}`, `{'model': …}`, with other
//! entries such as an optimizer beside it) or whose keys carry a wrapper prefix (`module.`,
//! `model.`, `state_dict.`) load like a bare state dict, from `.pt` and from safetensors.
//!
//! The `.pt` files are written here without PyTorch: a ZIP container (stored entries) holding
//! a protocol-2 pickle of nested dicts whose leaves are `torch._utils._rebuild_tensor_v2`
//! calls on `FloatStorage`s, as `torch.save` writes them.

use burn::tensor::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tweedie_unet::{UNet, UNetConfig, WeightMap};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/adm")
        .join(name)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tweedie-unet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A pickled value: a dict, an f32 tensor, or an int.
enum Node {
    Dict(Vec<(String, Node)>),
    Tensor(Vec<usize>, Vec<f32>),
    Int(i32),
}

fn dict(t: &Tensors, prefix: &str) -> Node {
    Node::Dict(
        t.iter()
            .map(|(k, (s, v))| (format!("{prefix}{k}"), Node::Tensor(s.clone(), v.clone())))
            .collect(),
    )
}

struct Pickler {
    out: Vec<u8>,
    storages: Vec<Vec<u8>>,
}

impl Pickler {
    fn string(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
    }
    fn int(&mut self, v: i32) {
        self.out.push(b'J');
        self.out.extend(v.to_le_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend(format!("{module}\n{name}\n").as_bytes());
    }
    fn ints_tuple(&mut self, v: &[usize]) {
        self.out.push(b'(');
        for &x in v {
            self.int(x as i32);
        }
        self.out.push(b't');
    }
    fn node(&mut self, n: &Node) {
        match n {
            Node::Int(v) => self.int(*v),
            Node::Dict(items) => {
                self.out.push(b'}');
                for (k, v) in items {
                    self.string(k);
                    self.node(v);
                    self.out.push(b's');
                }
            }
            Node::Tensor(shape, values) => {
                let key = self.storages.len().to_string();
                self.storages
                    .push(values.iter().flat_map(|x| x.to_le_bytes()).collect());
                let strides: Vec<usize> = (0..shape.len())
                    .map(|i| shape[i + 1..].iter().product())
                    .collect();
                self.global("torch._utils", "_rebuild_tensor_v2");
                self.out.extend(b"((");
                self.string("storage");
                self.global("torch", "FloatStorage");
                self.string(&key);
                self.string("cpu");
                self.int(values.len() as i32);
                self.out.extend(b"tQ");
                self.int(0);
                self.ints_tuple(shape);
                self.ints_tuple(&strides);
                self.out.push(0x89); // False: requires_grad
                self.global("collections", "OrderedDict");
                self.out.extend(b")RtR");
            }
        }
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A ZIP archive of stored (uncompressed) entries.
fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let (offset, crc, len) = (out.len() as u32, crc32(data), data.len() as u32);
        let common = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(0u16.to_le_bytes()); // stored
            v.extend(0u16.to_le_bytes()); // time
            v.extend(33u16.to_le_bytes()); // date 1980-01-01
            v.extend(crc.to_le_bytes());
            v.extend(len.to_le_bytes());
            v.extend(len.to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // made by
        common(&mut central);
        central.extend(0u16.to_le_bytes()); // comment
        central.extend(0u16.to_le_bytes()); // disk
        central.extend(0u16.to_le_bytes()); // internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Writes `root` as `torch.save` would (modern ZIP format).
fn save_pt(root: &Node, path: &Path) {
    let mut p = Pickler {
        out: vec![0x80, 2],
        storages: Vec::new(),
    };
    p.node(root);
    p.out.push(b'.');
    let mut entries = vec![
        ("archive/data.pkl".to_string(), p.out),
        ("archive/byteorder".to_string(), b"little".to_vec()),
    ];
    for (i, s) in p.storages.into_iter().enumerate() {
        entries.push((format!("archive/data/{i}"), s));
    }
    entries.push(("archive/version".to_string(), b"3\n".to_vec()));
    std::fs::write(path, zip(&entries)).unwrap();
}

fn small() -> Tensors {
    let mut t = Tensors::new();
    t.insert(
        "time_embed.0.weight".into(),
        (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
    );
    t.insert("out.2.bias".into(), (vec![2], vec![-1., 0.5]));
    t
}

fn contents(path: &Path) -> Tensors {
    let mut m = WeightMap::load(path).unwrap();
    let shapes: Vec<(String, Vec<usize>)> =
        m.shapes().map(|(k, s)| (k.clone(), s.clone())).collect();
    shapes
        .into_iter()
        .map(|(k, s)| {
            let v = m.take(&k, &s).unwrap();
            (k, (s, v))
        })
        .collect()
}

/// The `.pt` writer above makes files the loader reads (a bare state dict), and nested or
/// prefixed state dicts give the same keys and values.
#[test]
fn nested_pytorch_state_dicts_load_like_bare_ones() {
    let dir = tmp("nested-pt");
    let t = small();
    let cases = [
        ("bare", dict(&t, "")),
        (
            "state_dict",
            Node::Dict(vec![
                ("state_dict".into(), dict(&t, "")),
                ("epoch".into(), Node::Int(3)),
            ]),
        ),
        (
            "model_with_optimizer",
            Node::Dict(vec![
                ("model".into(), dict(&t, "")),
                ("optimizer".into(), dict(&t, "exp_avg.")),
                ("step".into(), Node::Int(10)),
            ]),
        ),
        (
            "state_dict_module",
            Node::Dict(vec![("state_dict".into(), dict(&t, "module."))]),
        ),
        ("module", dict(&t, "module.")),
    ];
    for (name, root) in cases {
        let path = dir.join(format!("{name}.pt"));
        save_pt(&root, &path);
        assert_eq!(contents(&path), t, "{name}.pt");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn fixture_tensors() -> Tensors {
    contents(&fixture("model.safetensors"))
}

fn output(weights: &Path) -> Vec<f32> {
    let device = Device::flex();
    let cfg = UNetConfig::from_json_file(fixture("config.json")).unwrap();
    let net = UNet::load(&cfg, weights, &device).unwrap();
    let n = cfg.image_size;
    let x: Vec<f32> = (0..3 * n * n)
        .map(|i| ((i % 13) as f32 / 6.5) - 1.0)
        .collect();
    let x = tweedie_core::tensor::from_vec(x, [1, 3, n, n], &device);
    tweedie_core::tensor::to_vec(&net.forward(x, &[17.0]))
}

/// The ADM fixture's weights, saved as `{'state_dict': …}` / `{'model': …, 'optimizer': …}`
/// `.pt` files and as safetensors with `state_dict.`, `model.` and `module.` prefixes, give
/// the UNet the same output as the bare file.
#[test]
fn the_unet_loads_nested_and_prefixed_checkpoints() {
    let dir = tmp("nested-unet");
    let t = fixture_tensors();
    let want = output(&fixture("model.safetensors"));
    let pt = [
        (
            "state_dict.pt",
            Node::Dict(vec![
                ("state_dict".into(), dict(&t, "")),
                ("epoch".into(), Node::Int(1)),
            ]),
        ),
        (
            "model.pt",
            Node::Dict(vec![
                ("model".into(), dict(&t, "")),
                ("optimizer".into(), dict(&small(), "")),
            ]),
        ),
    ];
    for (name, root) in pt {
        let path = dir.join(name);
        save_pt(&root, &path);
        assert_eq!(output(&path), want, "{name}");
    }
    for prefix in ["state_dict.", "model.", "module.", "state_dict.module."] {
        let prefixed: Tensors = t
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect();
        let path = dir.join(format!("{}.safetensors", prefix.trim_end_matches('.')));
        WeightMap::save_safetensors(&prefixed, &path).unwrap();
        assert_eq!(output(&path), want, "prefix {prefix}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
