//! Atomic file writes: write to a temporary file beside the target, then rename, so an
//! interrupted run never leaves a truncated file.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file + rename), creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes to `path` atomically through a callback that fills a temporary file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The process id in a temporary file name written by [`write_atomic_with`]
/// (`.NAME.PID.tmp`), or `None` when `name` is not one.
fn temp_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (target, pid) = inner.rsplit_once('.')?;
    if target.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be running. On Linux this reads `/proc/PID`; where that
/// cannot be told (no `/proc`, another OS) every process counts as running, so nothing is
/// removed.
fn process_may_be_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !cfg!(target_os = "linux") || !proc.join("self").exists() {
        return true;
    }
    pid == std::process::id() || proc.join(pid.to_string()).exists()
}

/// Removes the temporary files (`.NAME.PID.tmp`) that an interrupted [`write_atomic`] left in
/// `dir` (not its subfolders), and returns how many it removed. Only regular files of that
/// form are considered, and only those whose process is gone: a write still in flight, in
/// this process or another, is never touched. Processes are those this machine (PID
/// namespace) sees in `/proc`: do not share an output folder between machines that write to
/// it at the same time. Off Linux nothing is removed. A missing `dir` has nothing to clean
/// (0).
pub fn clean_stale_temps(dir: impl AsRef<Path>) -> std::io::Result<usize> {
    let dir = dir.as_ref();
    let with_path = |e: std::io::Error, p: &Path| {
        std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        r => r.map_err(|e| with_path(e, dir))?,
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| with_path(e, dir))?;
        let Some(pid) = entry.file_name().to_str().and_then(temp_pid) else {
            continue;
        };
        // `DirEntry::file_type` does not follow links: a link or folder is left alone.
        if !entry.file_type().is_ok_and(|t| t.is_file()) || process_may_be_running(pid) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            // Removed meanwhile (by another cleaner, or its writer renamed it): not ours.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(with_path(e, &entry.path())),
        }
    }
    Ok(removed)
}
