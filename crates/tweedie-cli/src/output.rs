//! Output folders and error text.

use anyhow::Result;
use std::path::Path;

/// An error and its causes on one line, each cause once: a cause whose text the message
/// already holds (errors that format their source into their own message and also return
/// it as `source()`) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Makes sure the output folder `dir` can take the outputs before any work is done: creates
/// it, and writes and removes a probe file in it.
pub(crate) fn check_out(dir: &Path) -> Result<()> {
    let fail = |e: std::io::Error| {
        anyhow::anyhow!("cannot write to the output folder {}: {e}", dir.display())
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Say when the folder already holds an earlier run's results: files this run writes are
    // replaced, the others stay (nothing is deleted), so a shorter rerun can leave old
    // outputs beside the new ones.
    let earlier = std::fs::read_dir(dir)
        .map_err(fail)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    if earlier > 0 {
        eprintln!(
            "note: {} already holds {earlier} entries from an earlier run; files this run writes are replaced, the others are left as they are",
            dir.display()
        );
    }
    let probe = dir.join(format!(".tweedie-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    // Temp files of an earlier run that was killed mid-write (`.tweedie-tmp-PID-…`, PID gone;
    // only names the tool makes).
    let removed = tweedie_io::clean_stale_temps(dir).map_err(fail)?;
    if removed > 0 {
        eprintln!(
            "removed {removed} stale temporary file(s) of an interrupted run from {}",
            dir.display()
        );
    }
    Ok(())
}

/// [`check_out`] for the folder of the output file `path`.
pub(crate) fn check_out_file(path: &Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => check_out(dir),
        None => check_out(Path::new(".")),
    }
}

/// Per-channel values as "0.128/0.115/0.115" (three decimals, slash-separated).
pub(crate) fn slash_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join("/")
}
