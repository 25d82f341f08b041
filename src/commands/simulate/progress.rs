//! The progress bar of `drover simulate`: on a terminal only, and only once the work has taken
//! more than a second, so quick runs print nothing but their result.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before the bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct Bar {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Bar {
    /// A bar for `total` runs (hidden until [`SHOW_AFTER`], and for good when stderr is no terminal).
    pub fn new(total: u64) -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            bar.set_style(
                ProgressStyle::with_template("simulating: {pos}/{len} runs {wide_bar} {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Bar {
            bar,
            started: Instant::now(),
        }
    }

    /// One run finished.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if bar.is_hidden() && self.started.elapsed() > SHOW_AFTER {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
