//! Watching the plugins folder: which plugins' files (`NAME.wasm`, `NAME.toml`, `NAME.json`) were
//! created, changed or removed. The operating system's file events (inotify on Linux, through the
//! `notify` crate; reads are not changes) are debounced, so a file written in many chunks is reported once it has been
//! quiet for [`SETTLE`]; the pipeline applies the changes at its next batch boundary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tracing::warn;

use super::PluginError;

/// How long a plugin's files must be quiet before a change is reported: a copy of a few MB
/// finishes well within it, and an operator's swap still takes effect within a second.
pub const SETTLE: Duration = Duration::from_millis(300);

/// A watch on one plugins folder.
pub struct PluginWatcher {
    dir: PathBuf,
    events: mpsc::Receiver<DebounceEventResult>,
    // Dropping it stops the watch.
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

impl PluginWatcher {
    /// Starts watching `dir` (not its subfolders).
    pub fn start(dir: &Path) -> Result<Self, PluginError> {
        let (tx, events) = mpsc::channel();
        let watch_error = |err: notify_debouncer_full::notify::Error| PluginError::Read {
            path: dir.to_owned(),
            source: std::io::Error::other(err),
        };
        let mut debouncer = new_debouncer(SETTLE, None, tx).map_err(watch_error)?;
        debouncer.watch(dir, RecursiveMode::NonRecursive).map_err(watch_error)?;
        Ok(PluginWatcher { dir: dir.to_owned(), events, _debouncer: debouncer })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the plugins whose files changed since the last call (never blocks).
    pub fn changed(&self) -> BTreeSet<String> {
        self.changes().into_keys().collect()
    }

    /// The plugins whose files changed since the last call, each with what changed (never blocks).
    pub fn changes(&self) -> BTreeMap<String, PluginChange> {
        let mut changes: BTreeMap<String, PluginChange> = BTreeMap::new();
        while let Ok(result) = self.events.try_recv() {
            match result {
                // Reading a plugin (as loading it does) is not a change.
                Ok(events) => {
                    let paths =
                        events.iter().filter(|e| !matches!(e.kind, EventKind::Access(_))).flat_map(|e| &e.paths);
                    for path in paths {
                        if let Some(name) = changed_plugin(path) {
                            let component = path.extension().is_some_and(|ext| ext == "wasm");
                            changes.entry(name).or_default().component |= component;
                        }
                    }
                }
                Err(errors) => {
                    for err in errors {
                        warn!(dir = %self.dir.display(), error = %err, "plugins folder watch error");
                    }
                }
            }
        }
        changes
    }
}

/// What changed of one plugin's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginChange {
    /// Its component, `NAME.wasm`, was created, replaced or removed (else only its manifest or
    /// configuration changed).
    pub component: bool,
}

/// The plugin a file belongs to: `NAME` of `NAME.wasm`, `NAME.toml` or `NAME.json` (not hidden
/// files, such as a copy in progress).
fn changed_plugin(path: &Path) -> Option<String> {
    let extension = path.extension()?.to_str()?;
    let stem = path.file_stem()?.to_str()?;
    (matches!(extension, "wasm" | "toml" | "json") && !stem.starts_with('.')).then(|| stem.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_files_map_to_its_name() {
        assert_eq!(changed_plugin(Path::new("/p/zscore.wasm")), Some("zscore".into()));
        assert_eq!(changed_plugin(Path::new("/p/zscore.toml")), Some("zscore".into()));
        assert_eq!(changed_plugin(Path::new("/p/zscore.json")), Some("zscore".into()));
        assert_eq!(changed_plugin(Path::new("/p/.zscore.wasm.partial")), None);
        assert_eq!(changed_plugin(Path::new("/p/.zscore.wasm")), None);
        assert_eq!(changed_plugin(Path::new("/p/notes.txt")), None);
    }

    #[test]
    fn files_written_renamed_and_removed_are_reported_by_plugin() {
        let scratch = tempfile::Builder::new().prefix("iotstream-watch-").tempdir().expect("folder");
        let dir = scratch.path();
        let watcher = PluginWatcher::start(dir).expect("watch");
        std::fs::write(dir.join(".a.wasm.partial"), b"x").expect("write");
        std::fs::rename(dir.join(".a.wasm.partial"), dir.join("a.wasm")).expect("rename");
        std::fs::write(dir.join("b.toml"), b"x").expect("write");
        std::fs::write(dir.join("readme.txt"), b"x").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = BTreeSet::new();
        while seen.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            seen.extend(watcher.changed());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        // A manifest alone, then a component: each plugin's change says which.
        std::fs::write(dir.join("c.toml"), b"x").expect("write");
        std::fs::write(dir.join("d.wasm"), b"x").expect("write");
        let mut changes = BTreeMap::new();
        while changes.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            changes.extend(watcher.changes());
        }
        let expected =
            [("c".to_owned(), PluginChange { component: false }), ("d".to_owned(), PluginChange { component: true })];
        assert_eq!(changes.into_iter().collect::<Vec<_>>(), expected);
        std::fs::remove_file(dir.join("a.wasm")).expect("remove");
        let mut seen = BTreeSet::new();
        while seen.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            seen.extend(watcher.changed());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a"]);
    }
}
