//! Hot swap: both plugins folders (the built-ins and the drop-ins) are watched while the pipeline
//! runs. A changed plugin is compiled and instantiated on a blocking thread while batches go on,
//! then installed at the next batch boundary (the old instance hands its state over); a refused
//! file leaves the running version running and is reported on the API; a removed file stops its
//! plugin. A name is loaded from the folder that wins it now ([`PluginFolders::locate`]): a drop-in
//! appearing swaps out the built-in of its name, and its removal swaps the built-in back in, each
//! with the state handed over. A built-in's change while a drop-in overrides it is ignored.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use iotstream_api::{Named, PluginAction};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::stages::Installed;

use crate::plugins::watch::PluginWatcher;
use crate::plugins::{Plugin, PluginError, PluginFolders, PluginLayer, PluginRuntime, folders};

/// The runtime that loads plugins, the folders and the watches on them, and the loads in progress.
pub struct PluginReload {
    runtime: Arc<PluginRuntime>,
    folders: PluginFolders,
    watchers: Vec<(PluginLayer, PluginWatcher)>,
    loading: Vec<Loading>,
}

/// A plugin being compiled and instantiated.
struct Loading {
    name: String,
    /// The folder its file is in.
    layer: PluginLayer,
    /// The load and how long it took, ms.
    task: JoinHandle<(Result<Plugin, PluginError>, u128)>,
}

/// What the folder asks of the pipeline now.
pub(super) enum Change {
    /// A plugin's new version is ready to install (its load took `load_ms`).
    Ready {
        /// The plugin.
        plugin: Box<Plugin>,
        /// The folder its file is in.
        layer: PluginLayer,
        /// Compile and instantiate time, ms.
        load_ms: u128,
    },
    /// A plugin's new file was refused.
    Refused {
        /// The plugin.
        name: String,
        /// Why.
        error: PluginError,
    },
    /// A plugin's file is gone.
    Removed {
        /// The plugin.
        name: String,
    },
}

impl PluginReload {
    /// Reloads with `runtime`, from `folders`, what `watchers` (one per folder, by layer) report.
    pub fn new(
        runtime: Arc<PluginRuntime>,
        folders: PluginFolders,
        watchers: Vec<(PluginLayer, PluginWatcher)>,
    ) -> Self {
        PluginReload { runtime, folders, watchers, loading: Vec::new() }
    }

    /// The folders.
    pub(super) fn folders(&self) -> &PluginFolders {
        &self.folders
    }

    /// Starts loading `name` from the folder that wins it now, superseding a load of it still in
    /// progress; false if neither folder holds it.
    fn start_load(&mut self, name: String) -> bool {
        self.loading.retain(|l| l.name != name);
        let Some(file) = self.folders.locate(&name) else { return false };
        let runtime = self.runtime.clone();
        let (path, layer) = (file.path, file.layer);
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (runtime.load(&path).map(|plugin| plugin.with_layer(layer)), started.elapsed().as_millis())
        });
        self.loading.push(Loading { name, layer: file.layer, task });
        true
    }

    /// Starts loading every plugin of the folders again (an admin's reload); how many.
    pub(super) fn reload_all(&mut self) -> usize {
        let mut names = BTreeSet::new();
        for (_, dir) in self.folders.layers() {
            names.extend(folders::plugin_names(dir).unwrap_or_default());
        }
        names.into_iter().filter(|name| self.start_load(name.clone())).count()
    }

    /// The plugins whose files changed since the last call, in either folder, that may run
    /// otherwise now: a change in the folder a plugin loads from, or a drop-in component created or
    /// removed (which decides the folder). A built-in's change while a drop-in overrides it is
    /// none, and so is a drop-in manifest without its component (logged: it does not configure the
    /// built-in).
    fn changed(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (layer, watcher) in &self.watchers {
            for (name, change) in watcher.changes() {
                match self.folders.locate(&name) {
                    Some(file) if file.layer != *layer && !(change.component && *layer == PluginLayer::DropIn) => {
                        if *layer == PluginLayer::DropIn {
                            warn!(
                                plugin = %name,
                                "a drop-in manifest or configuration without its .wasm is ignored: copy the \
                                 built-in's .wasm beside it to override the built-in"
                            );
                        }
                    }
                    _ => {
                        names.insert(name);
                    }
                }
            }
        }
        names
    }

    /// Starts loading what changed since the last call, and returns what is ready: loads that
    /// finished, and removals. Never blocks.
    pub(super) fn poll(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        for name in self.changed() {
            debug!(plugin = %name, "plugin files changed");
            if !self.start_load(name.clone()) {
                changes.push(Change::Removed { name });
            }
        }
        let (done, pending): (Vec<Loading>, Vec<Loading>) =
            std::mem::take(&mut self.loading).into_iter().partition(|l| l.task.is_finished());
        self.loading = pending;
        for Loading { name, layer, task } in done {
            changes.push(match task.now_or_never() {
                Some(Ok((Ok(plugin), load_ms))) => Change::Ready { plugin: Box::new(plugin), layer, load_ms },
                Some(Ok((Err(err), _))) => Change::Refused { name, error: err },
                Some(Err(join)) => Change::Refused { name, error: load_failed(&join.to_string()) },
                None => Change::Refused { name, error: load_failed("its load did not finish") },
            });
        }
        changes
    }
}

impl super::Pipeline {
    /// Installs the plugin versions that finished loading and stops the plugins whose files are
    /// gone (between batches).
    pub(super) fn apply_plugin_changes(&mut self) {
        let Some(reload) = self.reload.as_mut() else { return };
        let changes = reload.poll();
        if changes.is_empty() {
            return;
        }
        for change in changes {
            match change {
                Change::Ready { plugin, layer, load_ms } => {
                    let (name, version) = (plugin.name().to_owned(), plugin.info().version.clone());
                    let paused = Instant::now();
                    let installed = self.lanes.install(*plugin);
                    let pause_ms = paused.elapsed().as_secs_f64() * 1000.0;
                    let (action, detail) = match &installed {
                        Installed::New => {
                            (PluginAction::Loaded, format!("version {version} ({layer}), loaded in {load_ms} ms"))
                        }
                        Installed::StateHandedOver { bytes } => (
                            PluginAction::Swapped,
                            format!(
                                "version {version} ({layer}): state handed over ({bytes} bytes); loaded in {load_ms} ms, pipeline paused {pause_ms:.1} ms"
                            ),
                        ),
                        Installed::Fresh(why) => (
                            PluginAction::Swapped,
                            format!(
                                "version {version} ({layer}): starts fresh because {why}; loaded in {load_ms} ms, pipeline paused {pause_ms:.1} ms"
                            ),
                        ),
                    };
                    info!(plugin = %name, action = action.as_str(), layer = layer.as_str(), "{detail}");
                    self.live.set_plugin_failure(&name, None);
                    self.live.plugin_event(&name, action, detail);
                    // Checkpoint with the next batch: a restart then replays nothing from before
                    // the change with the changed plugins.
                    for lane in self.lanes.owned.values_mut() {
                        lane.last_checkpoint = None;
                    }
                }
                Change::Refused { name, error } => {
                    let running = self.lanes.contains(&name);
                    error!(plugin = %name, error = %error, running, "plugin file refused");
                    let error = error.public();
                    let detail = if running { format!("{error}; the running version keeps running") } else { error };
                    self.live.set_plugin_failure(&name, Some(detail.clone()));
                    self.live.plugin_event(&name, PluginAction::Refused, detail);
                }
                Change::Removed { name } => {
                    self.live.set_plugin_failure(&name, None);
                    if self.lanes.remove(&name) {
                        info!(plugin = %name, "plugin file removed: plugin stopped");
                        self.live.plugin_event(
                            &name,
                            PluginAction::Removed,
                            "its file was removed; the plugin stopped".into(),
                        );
                    }
                }
            }
        }
        self.live.set_plugins(self.plugin_statuses());
    }
}

/// A load that ended without a plugin or an error of its own (its task failed or vanished).
fn load_failed(why: &str) -> PluginError {
    PluginError::Runtime { what: "plugin load", message: why.to_owned() }
}
