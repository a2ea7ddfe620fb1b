//! Bounded fuzzing of the image loader: real PNG and JPEG bytes, mutated with a seeded
//! generator (bit flips, byte overwrites, insertions, deletions, truncation, repeated
//! regions), must decode or fail with an `Err`, never panic. Runs in a couple of seconds in
//! `cargo test`; `TWEEDIE_FUZZ_ITERS` raises the number of inputs per seed file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use tweedie_io::{ImageLimits, decode_image};

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

/// One to four random edits of `seed`; the header region gets extra attention.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        // Half the edits land in the first 512 bytes (headers, tables).
        let at = if rng.below(2) == 0 {
            rng.below(len.min(512))
        } else {
            rng.below(len)
        };
        match rng.below(7) {
            0 => {
                if let Some(x) = b.get_mut(at) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(x) = b.get_mut(at) {
                    *x = [0x00, 0xFF, 0x7F, 0x80, rng.next() as u8][rng.below(5)];
                }
            }
            2 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at.min(b.len())..at.min(b.len()), bytes);
            }
            3 => {
                let end = (at + 1 + rng.below(64)).min(b.len());
                b.drain(at.min(end)..end);
            }
            4 => b.truncate(rng.below(len)),
            5 => {
                // Repeat a region (duplicated segments/chunks).
                let end = (at + 1 + rng.below(256)).min(b.len());
                let region = b[at.min(end)..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, region);
            }
            _ => {
                // Big-endian 16/32-bit field set to an extreme (sizes, lengths).
                let v: [u8; 4] = [0xFF, 0xFF, 0xFF, 0xFF].map(|x| x & rng.next() as u8);
                for (i, x) in v.iter().enumerate().take(2 + 2 * rng.below(2)) {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = *x;
                    }
                }
            }
        }
    }
    b
}

#[test]
fn mutated_png_and_jpeg_bytes_never_panic() {
    let faces = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/faces");
    let jpeg = std::fs::read(faces.join("000444.jpg")).unwrap();
    let face = tweedie_io::load_image(faces.join("000719.jpg")).unwrap();
    // PNGs of real content: 8-bit RGB, and 16-bit gray (a different decoding path).
    let mut png = Vec::new();
    face.to_rgb8()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let gray16 = image::DynamicImage::ImageRgb8(face.to_rgb8()).to_luma16();
    let mut png16 = Vec::new();
    gray16
        .write_to(
            &mut std::io::Cursor::new(&mut png16),
            image::ImageFormat::Png,
        )
        .unwrap();
    let iters: usize = std::env::var("TWEEDIE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let limits = ImageLimits {
        max_pixels: 4_000_000,
    };
    // Quiet the default hook: a panic is recorded below, with its input.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let (mut runs, mut ok, mut errs) = (0, 0, 0);
    let mut panics = Vec::new();
    for (name, seed, salt) in [
        ("seed.jpg", &jpeg, 1u64),
        ("seed.png", &png, 2),
        ("seed16.png", &png16, 3),
    ] {
        let mut rng = Rng(0x5EED_0000 + salt);
        for i in 0..iters {
            let input = mutate(seed, &mut rng);
            runs += 1;
            match catch_unwind(AssertUnwindSafe(|| decode_image(&input, name, &limits))) {
                Ok(Ok(img)) => {
                    ok += 1;
                    assert_eq!(img.data.len(), 3 * img.width * img.height);
                    assert!((img.width * img.height) as u64 <= limits.max_pixels);
                    assert!(img.data.iter().all(|v| (-1.0..=1.0).contains(v)));
                }
                Ok(Err(e)) => {
                    errs += 1;
                    assert!(e.to_string().contains(name), "{e}");
                }
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let path = std::env::temp_dir().join(format!("tweedie-fuzz-{name}-{i}"));
                    let _ = std::fs::write(&path, &input);
                    panics.push(format!("{name} #{i}: {msg} (input {})", path.display()));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    println!(
        "image fuzz: {runs} executions, {ok} decoded, {errs} errors, {} panics",
        panics.len()
    );
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}
