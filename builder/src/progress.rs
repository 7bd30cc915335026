//! Progress on stderr (indicatif): a spinner per step, with its elapsed time
//! when it finishes. Silent with `-q` and when stderr is not a terminal.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress reporter of one build.
#[derive(Debug, Clone)]
pub struct Progress {
    enabled: bool,
}

/// One running step; call [`Step::done`] when it ends.
pub struct Step {
    bar: Option<ProgressBar>,
    msg: String,
    start: Instant,
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled }
    }

    /// Start a step. The spinner appears only if the step takes a while.
    pub fn step(&self, msg: String) -> Step {
        let bar = self.enabled.then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
            b.set_message(msg.clone());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Step { bar, msg, start: Instant::now(), enabled: self.enabled }
    }

    /// One line about what the build decided (not a step of its own).
    pub fn note(&self, line: &str) {
        if self.enabled {
            eprintln!("{line}");
        }
    }
}

impl Step {
    pub fn done(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let t = self.start.elapsed();
        if self.enabled && t > Duration::from_millis(500) {
            eprintln!("{} ({:.1} s)", self.msg, t.as_secs_f64());
        }
    }
}
