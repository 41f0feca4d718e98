//! Progress and rates of the long commands (`replay`, `iforest`, `simulate`, `bench`), on stderr.
//!
//! Drawn only while stderr is a terminal (indicatif's stderr target hides itself otherwise), so a
//! pipe, a CI log or a container's log gets no escape codes; stdout is never touched, since it
//! carries the commands' reports.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner moves while nothing else updates it.
const TICK: Duration = Duration::from_millis(120);

/// A bar to `total` `unit`s, with the rate and the time left.
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    ProgressBar::new(total).with_style(style(&bar_template(unit)))
}

/// A counter of `unit`s with no known end, with the rate.
pub fn counter(unit: &str) -> ProgressBar {
    let progress = ProgressBar::new_spinner().with_style(style(&counter_template(unit)));
    progress.enable_steady_tick(TICK);
    progress
}

fn bar_template(unit: &str) -> String {
    format!("{{msg}} {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}} left)")
}

fn counter_template(unit: &str) -> String {
    format!("{{spinner}} {{msg}} {{human_pos}} {unit} ({{per_sec}}, {{elapsed}})")
}

/// A bar for `total` `unit`s, or a counter when the total is not known (0).
pub fn bar_or_counter(total: u64, unit: &str) -> ProgressBar {
    if total > 0 { bar(total, unit) } else { counter(unit) }
}

/// `template`, or indicatif's default when a template is wrong (a bug here must not stop a run).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_valid() {
        for template in [bar_template("rows"), counter_template("readings")] {
            assert!(ProgressStyle::with_template(&template).is_ok(), "{template}");
        }
        // Off a terminal (as under `cargo test`) nothing is drawn.
        assert!(bar(10, "rows").is_hidden());
    }
}
