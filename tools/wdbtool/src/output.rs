//! What the commands share to talk to the user: a progress bar on stderr and sizes in
//! `1.5 MiB` style.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// indicatif template of a byte count: `1.2 GiB/4.0 GiB`.
pub const BYTES: &str = "{bytes}/{total_bytes}";

/// A progress bar on stderr, shown only when stderr is a terminal (so pipes, scripts
/// and tests see the command's output alone).
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar labelled `what`; `counts` is the indicatif template of the figures after
    /// the bar ([`BYTES`], or e.g. `{pos}/{len} versions`).
    pub fn new(what: &str, counts: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {what} [{{bar:40}}] {counts} ({{eta}})"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress(Some(b))
    }

    /// `done` of `total` units are done.
    pub fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    /// Remove the bar before the command prints its result.
    pub fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
