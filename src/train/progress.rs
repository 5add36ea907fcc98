//! Progress bars on stderr: drawn only when stderr is a terminal (indicatif hides them
//! otherwise) and when enabled. Without the `cli` feature (no indicatif) they are never drawn.

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps with `template` (indicatif syntax), hidden unless `enabled` and
/// stderr is a terminal.
#[cfg(feature = "cli")]
pub(crate) fn bar(len: usize, enabled: bool, template: &str) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// A progress bar that draws nothing (built without the `cli` feature).
#[cfg(not(feature = "cli"))]
pub(crate) struct ProgressBar;

#[cfg(not(feature = "cli"))]
impl ProgressBar {
    pub(crate) fn set_message(&self, _message: String) {}
    pub(crate) fn inc(&self, _delta: u64) {}
    pub(crate) fn finish_and_clear(&self) {}
}

/// Without the `cli` feature: a bar that draws nothing.
#[cfg(not(feature = "cli"))]
pub(crate) fn bar(_len: usize, _enabled: bool, _template: &str) -> ProgressBar {
    ProgressBar
}
