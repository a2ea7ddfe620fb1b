//! Opening input files of any kind: regular files, and inputs that cannot be seeked (a pipe
//! given as `/dev/stdin` or `/proc/self/fd/N`, a named FIFO, a character device).
//!
//! Every loader of this workspace (images, masks, blur kernels) opens its file here, so they
//! all accept the same inputs. A regular file is read in place. Anything else is read into
//! memory once, within a byte limit, and kept for the rest of the process: a pipe can be read
//! only once, and a command that looks at an input twice (a readability check, then the load)
//! gets the same bytes both times (kept by path, device and inode: what is written into a
//! FIFO after it was read is not seen). A named FIFO is opened without blocking, so a FIFO that no
//! process writes to is an error after [`FIFO_WRITER_WAIT`] instead of a hang; a terminal is
//! refused (its input would never end); a folder is refused.

use crate::IoError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a named FIFO may go without a writer before reading it is an error. A FIFO's
/// writer normally opens it first (and waits for the reader), so this only has to cover a
/// writer started at about the same time as the reader.
pub const FIFO_WRITER_WAIT: Duration = Duration::from_secs(5);

/// The most bytes [`read_input`] takes from a non-seekable input unless told otherwise
/// (256 MiB); images use a limit derived from their pixel limit instead.
pub const DEFAULT_MAX_STREAM_BYTES: u64 = 256 << 20;

/// An opened input: a regular file, or the whole content of a non-seekable one.
pub(crate) enum Source {
    /// A regular file, read in place.
    File(std::fs::File),
    /// The bytes of a pipe, FIFO or device, read once.
    Bytes(Arc<[u8]>),
}

fn invalid(path: &Path, reason: impl Into<String>) -> IoError {
    IoError::Invalid {
        what: path.display().to_string(),
        reason: reason.into(),
    }
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> IoError + '_ {
    move |source| IoError::File {
        path: path.into(),
        source,
    }
}

/// Opens `path` for reading: a regular file as it is, anything else read whole into memory
/// (at most `max_bytes`; see the module docs). A folder is an error.
pub(crate) fn open_input(path: &Path, max_bytes: u64) -> Result<Source, IoError> {
    let meta = std::fs::metadata(path).map_err(file_err(path))?;
    if meta.is_file() {
        return std::fs::File::open(path)
            .map(Source::File)
            .map_err(file_err(path));
    }
    if meta.is_dir() {
        return Err(invalid(path, "is a folder, not a file"));
    }
    read_stream_once(path, &meta, max_bytes, FIFO_WRITER_WAIT).map(Source::Bytes)
}

/// The whole content of the input `path`, regular or not (see the module docs): a regular
/// file is read as `std::fs::read` does, a pipe, FIFO or device once per process, into
/// memory, at most `max_bytes` (a longer stream is an error naming the limit).
pub fn read_input(path: impl AsRef<Path>, max_bytes: u64) -> Result<Arc<[u8]>, IoError> {
    let path = path.as_ref();
    match open_input(path, max_bytes)? {
        Source::Bytes(b) => Ok(b),
        Source::File(mut f) => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut bytes).map_err(file_err(path))?;
            Ok(bytes.into())
        }
    }
}

/// Which stream an input is: its path as given, and (on Unix) the device and inode it
/// resolves to, so a FIFO removed and made again under the same name is a new stream.
type StreamKey = (PathBuf, u64, u64);

fn stream_key(path: &Path, meta: &std::fs::Metadata) -> StreamKey {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        (path.to_path_buf(), meta.dev(), meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        (path.to_path_buf(), 0, 0)
    }
}

/// One stream's bytes, once read.
type Slot = Arc<Mutex<Option<Arc<[u8]>>>>;

/// The streams read so far in this process, by [`StreamKey`].
fn streams() -> &'static Mutex<HashMap<StreamKey, Slot>> {
    static STREAMS: OnceLock<Mutex<HashMap<StreamKey, Slot>>> = OnceLock::new();
    STREAMS.get_or_init(Default::default)
}

/// The content of the non-regular input `path`: from the cache when this process read it
/// before, else read now ([`read_stream`]) and kept. A second reader of the same stream
/// waits for the first one's bytes; other streams are read meanwhile.
fn read_stream_once(
    path: &Path,
    meta: &std::fs::Metadata,
    max_bytes: u64,
    fifo_wait: Duration,
) -> Result<Arc<[u8]>, IoError> {
    let slot: Slot = streams()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(stream_key(path, meta))
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bytes) = slot.as_ref() {
        if bytes.len() as u64 > max_bytes {
            return Err(too_long(path, max_bytes));
        }
        return Ok(bytes.clone());
    }
    let bytes: Arc<[u8]> = read_stream(path, is_fifo(meta), max_bytes, fifo_wait)?.into();
    *slot = Some(bytes.clone());
    Ok(bytes)
}

fn is_fifo(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_fifo()
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

fn too_long(path: &Path, max_bytes: u64) -> IoError {
    invalid(
        path,
        format!(
            "more than {max_bytes} bytes came from this pipe or device, above the limit for \
             this input; save the data to a file and give the file"
        ),
    )
}

/// `O_NONBLOCK` where its value is known without the C headers (Linux on the common
/// architectures, macOS and the BSDs); elsewhere a FIFO is opened blocking.
const O_NONBLOCK: Option<i32> = if cfg!(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)) {
    Some(0x0004)
} else if cfg!(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)) {
    Some(0o4000)
} else {
    None
};

/// Reads a non-regular input to its end, at most `max_bytes`. A FIFO is opened without
/// blocking and polled: while no process has it open for writing (reads give end-of-file
/// before any byte), it is given `fifo_wait`, then refused; once a writer is seen, its
/// end-of-file ends the data.
fn read_stream(
    path: &Path,
    fifo: bool,
    max_bytes: u64,
    fifo_wait: Duration,
) -> Result<Vec<u8>, IoError> {
    use std::io::{IsTerminal, Read};
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    let nonblocking = fifo && O_NONBLOCK.is_some();
    #[cfg(unix)]
    if let (true, Some(flag)) = (nonblocking, O_NONBLOCK) {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(flag);
    }
    let mut f = options.open(path).map_err(file_err(path))?;
    if f.is_terminal() {
        return Err(invalid(
            path,
            "is a terminal, whose input never ends: give a file, or pipe the data in \
             (`… /dev/stdin < FILE`)",
        ));
    }
    let start = Instant::now();
    let mut writer_seen = !nonblocking;
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut chunk) {
            Ok(0) if writer_seen => break,
            Ok(0) => {
                if start.elapsed() >= fifo_wait {
                    return Err(invalid(
                        path,
                        format!(
                            "is a named pipe (FIFO) that no process wrote to within {} s; \
                             start the writer first (`cat FILE > {} &`), or give the file \
                             itself",
                            fifo_wait.as_secs_f64(),
                            path.display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(n) => {
                writer_seen = true;
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() as u64 > max_bytes {
                    return Err(too_long(path, max_bytes));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A writer has the FIFO open but has not written yet.
                writer_seen = true;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(file_err(path)(e)),
        }
    }
    if bytes.is_empty() {
        return Err(invalid(
            path,
            "is empty: nothing came from this pipe or device",
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(tag: &str) -> Option<PathBuf> {
        let dir = std::env::temp_dir().join(format!("tweedie-fifo-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("fifo");
        let _ = std::fs::remove_file(&p);
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(p)
    }

    #[test]
    fn a_fifo_without_a_writer_is_refused_not_waited_on_forever() {
        let Some(p) = mkfifo("nowriter") else {
            eprintln!("no mkfifo: skipped");
            return;
        };
        let meta = std::fs::metadata(&p).unwrap();
        let t = Instant::now();
        let err = read_stream_once(&p, &meta, 1 << 20, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(err.contains("no process wrote to"), "{err}");
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }

    #[test]
    fn a_fifo_with_a_writer_is_read_whole_and_kept() {
        let Some(p) = mkfifo("writer") else {
            eprintln!("no mkfifo: skipped");
            return;
        };
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (writer_path, expected) = (p.clone(), data.clone());
        // Opening for writing blocks until the reader opens; the data is larger than a pipe
        // buffer, so the reader must keep reading while the writer is still writing.
        let writer = std::thread::spawn(move || std::fs::write(writer_path, expected).unwrap());
        let first = read_input(&p, 1 << 20).unwrap();
        writer.join().unwrap();
        assert_eq!(&first[..], &data[..]);
        // Read again: the same bytes, from memory (the FIFO has no writer any more).
        let again = read_input(&p, 1 << 20).unwrap();
        assert_eq!(&again[..], &data[..]);
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }

    #[test]
    fn streams_above_the_limit_and_folders_are_refused() {
        let Some(p) = mkfifo("limit") else {
            eprintln!("no mkfifo: skipped");
            return;
        };
        let writer_path = p.clone();
        let writer = std::thread::spawn(move || {
            let _ = std::fs::write(writer_path, vec![7u8; 4096]);
        });
        let err = read_input(&p, 1000).unwrap_err().to_string();
        assert!(err.contains("more than 1000 bytes"), "{err}");
        writer.join().unwrap();
        let err = read_input(p.parent().unwrap(), 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a folder"), "{err}");
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }
}
