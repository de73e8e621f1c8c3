//! Progress bars for long work, drawn on stderr only when it is a terminal,
//! so scripts and logs stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn styled(len: u64, what: &str, counts: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{what} [{{elapsed_precise}}] {{wide_bar}} {counts} ({{eta}} left)");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template"));
    bar
}

/// A bar counting items up to `len`, hidden when stderr is not a terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    styled(len, what, "{pos}/{len} ({per_sec})")
}

/// A bar counting bytes up to `len`, hidden when stderr is not a terminal.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    styled(len, what, "{bytes}/{total_bytes} ({bytes_per_sec})")
}
