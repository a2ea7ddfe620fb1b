//! Bounded fuzzing of the checkpoint loaders and the config parser: the fixture's real
//! safetensors and `.pt` files and its JSON config, mutated with a seeded generator (bit flips,
//! byte overwrites, insertions, deletions, truncation, repeated regions, extreme size fields),
//! must load or fail with an `Err`, never panic. A few seconds in `cargo test`;
//! `TWEEDIE_FUZZ_ITERS` scales the number of inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use tweedie_unet::{UNetConfig, WeightMap};

/// SplitMix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits of `seed`. `hot` lists byte ranges holding the structure (headers,
/// pickles, ZIP directories); most edits land there, the rest anywhere.
fn mutate(seed: &[u8], hot: &[std::ops::Range<usize>], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        let at = match hot.get(rng.below(hot.len() + 1)) {
            Some(r) if r.start < len => (r.start + rng.below(r.len())).min(len - 1),
            _ => rng.below(len),
        };
        match rng.below(8) {
            0 | 1 => {
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.below(8);
                }
            }
            2 => {
                if let Some(x) = b.get_mut(at) {
                    *x = [0x00, 0xFF, 0x7F, 0x80, b'9', b'-', b'"', rng.next() as u8][rng.below(8)];
                }
            }
            3 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at.min(b.len())..at.min(b.len()), bytes);
            }
            4 => {
                let end = (at + 1 + rng.below(32)).min(b.len());
                b.drain(at.min(end)..end);
            }
            5 => {
                if rng.below(4) == 0 {
                    b.truncate(rng.below(len));
                }
            }
            6 => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                let region = b[at.min(end)..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, region);
            }
            _ => {
                // A little-endian size field set to an extreme.
                let v = [u64::MAX, u32::MAX as u64, 1 << 40, 0, rng.next()][rng.below(5)];
                let n = [2, 4, 8][rng.below(3)];
                for (i, x) in v.to_le_bytes().iter().take(n).enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = *x;
                    }
                }
            }
        }
    }
    b
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/adm")
        .join(name)
}

fn iters(default: usize) -> usize {
    std::env::var("TWEEDIE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The message of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Loads `iters` mutants of `seed` through `WeightMap::load` (from a temp file named like
/// `name`); returns (runs, loaded, errors, panics).
fn fuzz_file(
    name: &str,
    seed: &[u8],
    hot: &[std::ops::Range<usize>],
    iters: usize,
    salt: u64,
) -> (usize, usize, usize, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("tweedie-unet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut rng = Rng(0xF0_22ED + salt);
    let (mut ok, mut errs, mut panics) = (0, 0, Vec::new());
    for i in 0..iters {
        let input = mutate(seed, hot, &mut rng);
        std::fs::write(&path, &input).unwrap();
        match catch_unwind(AssertUnwindSafe(|| WeightMap::load(&path))) {
            Ok(Ok(w)) => {
                ok += 1;
                for (_, shape) in w.shapes() {
                    assert!(
                        shape
                            .iter()
                            .try_fold(1usize, |a, &d| a.checked_mul(d))
                            .is_some()
                    );
                }
            }
            Ok(Err(e)) => {
                errs += 1;
                assert!(e.to_string().contains(name), "{e}");
            }
            Err(p) => {
                let keep = dir.join(format!("panic-{i}-{name}"));
                std::fs::write(&keep, &input).unwrap();
                panics.push(format!(
                    "{name} #{i}: {} (input kept at {})",
                    panic_message(&*p),
                    keep.display()
                ));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir); // kept when it holds a panicking input
    (iters, ok, errs, panics)
}

/// Where the structure of a `.pt` (ZIP) file lies: the first entries' headers with the pickle
/// (`data.pkl`, which `torch.save` writes first), the pickle alone, and the central directory
/// at the end.
fn zip_hot_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let name_len = u16::from_le_bytes([bytes[26], bytes[27]]) as usize;
    let extra = u16::from_le_bytes([bytes[28], bytes[29]]) as usize;
    let size = u32::from_le_bytes(bytes[18..22].try_into().unwrap()) as usize;
    assert!(bytes[30..30 + name_len].ends_with(b"data.pkl"));
    let pickle = 30 + name_len + extra..30 + name_len + extra + size;
    let tail = bytes.len().saturating_sub(30_000)..bytes.len();
    vec![0..pickle.end, pickle, tail]
}

#[test]
fn mutated_checkpoints_never_panic() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut all_panics = Vec::new();
    // safetensors: an 8-byte header length, then a JSON header; the small I/O fixture (fast)
    // and the real model.
    for (file, n, salt) in [
        ("io.safetensors", iters(1500), 1),
        ("model.safetensors", iters(1500) / 10, 2),
    ] {
        let seed = std::fs::read(fixture(file)).unwrap();
        let header = 8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
        let (runs, ok, errs, panics) = fuzz_file(file, &seed, &[0..header, 0..16], n, salt);
        report.push(format!(
            "{file}: {runs} runs, {ok} loaded, {errs} errors, {} panics",
            panics.len()
        ));
        all_panics.extend(panics);
    }
    // PyTorch .pt (ZIP + pickle).
    let seed = std::fs::read(fixture("model.pt")).unwrap();
    let hot = zip_hot_ranges(&seed);
    let (runs, ok, errs, panics) = fuzz_file("model.pt", &seed, &hot, iters(1500) / 6, 3);
    report.push(format!(
        "model.pt: {runs} runs, {ok} loaded, {errs} errors, {} panics",
        panics.len()
    ));
    all_panics.extend(panics);
    std::panic::set_hook(hook);
    println!("weight fuzz:\n  {}", report.join("\n  "));
    assert!(all_panics.is_empty(), "panics:\n{}", all_panics.join("\n"));
}

#[test]
fn mutated_configs_never_panic() {
    let seed = std::fs::read(fixture("config.json")).unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(0xC0_4F16);
    let (mut ok, mut errs, mut panics) = (0, 0, Vec::new());
    let n = iters(1500) * 5;
    // Numbers a user might write, big and small.
    let numbers = [
        "0",
        "1",
        "-1",
        "3",
        "7",
        "31",
        "33",
        "64",
        "1e9",
        "65536",
        "1000000",
        "4294967296",
        "18446744073709551615",
        "1e300",
        "-1e300",
        "0.5",
        "NaN",
    ];
    for i in 0..n {
        let text = if rng.below(2) == 0 {
            String::from_utf8_lossy(&mutate(&seed, &[], &mut rng)).into_owned()
        } else {
            // Replace one value with an extreme number or list.
            let text = String::from_utf8_lossy(&seed).into_owned();
            let mut parts: Vec<&str> = text.split(": ").collect();
            let k = 1 + rng.below(parts.len() - 1);
            let value = parts[k];
            let end = value.find([',', '\n', '}']).unwrap_or(value.len());
            let new = match rng.below(3) {
                0 => numbers[rng.below(numbers.len())].to_string(),
                1 => format!("\"{}\"", numbers[rng.below(numbers.len())]),
                _ => format!(
                    "\"{},{}\"",
                    numbers[rng.below(numbers.len())],
                    numbers[rng.below(numbers.len())]
                ),
            };
            let replaced = format!("{new}{}", &value[end..]);
            parts[k] = &replaced;
            parts.join(": ")
        };
        match catch_unwind(AssertUnwindSafe(|| {
            UNetConfig::from_json_str(&text)
                .map(|c| (c.parameter_count(), c.estimated_memory_bytes()))
        })) {
            Ok(Ok((p, m))) => {
                ok += 1;
                // Accepted configs are within the bounds.
                assert!(
                    p.unwrap() <= u128::from(UNetConfig::MAX_PARAMETERS),
                    "{text}"
                );
                assert!(
                    m.unwrap() <= u128::from(UNetConfig::memory_limit_bytes()),
                    "{text}"
                );
            }
            Ok(Err(_)) => errs += 1,
            Err(p) => panics.push(format!("#{i}: {}\n{text}", panic_message(&*p))),
        }
    }
    std::panic::set_hook(hook);
    println!(
        "config fuzz: {n} runs, {ok} accepted, {errs} errors, {} panics",
        panics.len()
    );
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n\n"));
}
