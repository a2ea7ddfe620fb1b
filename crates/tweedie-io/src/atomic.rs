//! Atomic file writes: write to a temporary file beside the target, then rename, so an
//! interrupted run never leaves a truncated file. Temporary files carry the tool's own prefix
//! ([`TEMP_PREFIX`]), so that cleaning up after a killed run removes only files it made.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically (temp file + rename), creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// The prefix of every temporary file [`write_atomic_with`] makes, and the only files
/// [`clean_stale_temps`] ever removes: `.tweedie-tmp-PID-SEQ-NAME`.
pub const TEMP_PREFIX: &str = ".tweedie-tmp-";

/// The longest file name the temporary files may have: 255 bytes, the limit of the usual
/// file systems (ext4, XFS, Btrfs, APFS, NTFS in UTF-16 units).
const MAX_NAME_BYTES: usize = 255;

/// The temporary file name for a write of the file named `name` by process `pid`, the
/// `seq`-th of this process: `.tweedie-tmp-PID-SEQ-NAME`, with `NAME` cut (at a character
/// boundary) so the whole stays within 255 bytes whatever the target's name. `PID-SEQ` makes
/// it unique; `NAME` is only there to show what is being written.
fn temp_name(name: &str, pid: u32, seq: u64) -> String {
    let head = format!("{TEMP_PREFIX}{pid}-{seq}-");
    let room = MAX_NAME_BYTES.saturating_sub(head.len());
    let mut cut = name.len().min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{head}{}", &name[..cut])
}

/// Writes to `path` atomically through a callback that fills a temporary file beside it
/// (named by [`TEMP_PREFIX`], at most 255 bytes long, so any legal target name works).
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = path.with_file_name(temp_name(
        &name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
    ));
    let result = (|| {
        // PID-SEQ is unique among running processes: a file of that name can only be a dead
        // process's leftover (its PID reused), and is replaced.
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

/// The process id in a temporary file name made by [`write_atomic_with`]
/// (`.tweedie-tmp-PID-SEQ-NAME`), or `None` when `name` is not one: nothing without the
/// tool's own prefix and both numbers is ever taken for a temporary file.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let (pid, seq, _target) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(seq) {
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

/// Removes the temporary files (`.tweedie-tmp-PID-SEQ-NAME`, see [`TEMP_PREFIX`]) that an
/// interrupted [`write_atomic`] left in `dir` (not its subfolders), and returns how many it
/// removed. Only regular files with the tool's own prefix and that form are considered (a
/// user's `.notes.4242.tmp` is never touched), and only those whose process is gone: a write
/// still in flight, in this process or another, is never touched. Processes are those this
/// machine (PID namespace) sees in `/proc`: do not share an output folder between machines
/// that write to it at the same time. Off Linux nothing is removed. A missing `dir` has
/// nothing to clean (0).
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
