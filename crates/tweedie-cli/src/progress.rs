//! Progress bars on a terminal, plain lines without one.

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Progress of a long command counted in units of work (images, batches): a bar on a
/// terminal; without one (a job logging to a file, a pipe) a plain line per update with the
/// elapsed time and an ETA, e.g. `eval: 3/12 (25%) DPS inpaint-box face  elapsed 9 s  ETA 27 s`.
pub(crate) struct Progress {
    pb: ProgressBar,
    plain: bool,
    what: String,
    total: usize,
    done: usize,
    started: std::time::Instant,
}

impl Progress {
    /// `total` units of work, named `what` (`"eval"`, `"generate"`).
    pub(crate) fn new(total: usize, what: &str) -> Self {
        Self::with_bar(bar(total, what), total, what)
    }

    fn with_bar(pb: ProgressBar, total: usize, what: &str) -> Self {
        let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            pb,
            plain,
            what: what.to_string(),
            total,
            done: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Plain lines only, without a terminal; no bar on one (where another bar shows the
    /// progress within each unit).
    pub(crate) fn lines(total: usize, what: &str) -> Self {
        Self::with_bar(ProgressBar::hidden(), total, what)
    }

    /// `n` more units done (`note` says which, for the plain line).
    pub(crate) fn inc(&mut self, n: usize, note: &str) {
        self.advance(n);
        self.say(note);
    }

    /// `n` more units done, without a plain line.
    pub(crate) fn advance(&mut self, n: usize) {
        self.done += n;
        self.pb.inc(n as u64);
    }

    /// The plain line now (nothing on a terminal).
    pub(crate) fn say(&self, note: &str) {
        if self.plain {
            eprintln!("{}", self.line(note));
        }
    }

    /// The plain progress line.
    fn line(&self, note: &str) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = self.total.saturating_sub(self.done);
        let eta = if self.done > 0 {
            format!("{:.0} s", elapsed / self.done as f64 * left as f64)
        } else {
            "?".into()
        };
        let pct = 100.0 * self.done as f64 / self.total.max(1) as f64;
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" {note}")
        };
        format!(
            "{}: {}/{} ({pct:.0}%){note}  elapsed {elapsed:.0} s  ETA {eta}",
            self.what, self.done, self.total
        )
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        self.pb.finish_and_clear();
    }
}
