//! Admin actions on the running plugins (lift a quarantine, discard a shadow, reload every plugin
//! from its folder), asked over the API. The pipeline owns the plugins on its own task, so a
//! request does not touch them: it goes through a channel the pipeline drains at batch boundaries,
//! as the folder's changes do ([`super::reload`]), and the answer comes back on a oneshot.
//!
//! What must survive a restart is done to the drop-in folder, as an operator would do it by hand
//! (docs/plugins.md): a discarded shadow's files are deleted (the watch then finds it gone); a
//! promoted shadow's files become the live detector's (its manifest without `shadow_of`, named
//! for the live one) and its own are deleted, so the watch swaps the live detector for it, with the
//! live detector's state handed over, at a batch boundary, and the next start runs the same. A
//! promoted shadow of a built-in detector is a drop-in of the built-in's name, which overrides it.
//! The built-in folder is never written: it is the installation's.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use iotstream_api::{Named, PluginAction, PluginState};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::plugins::PluginLayer;

/// Requests waiting for the next batch boundary; more are refused (503) rather than queued without
/// bound: an operator asks a handful at a time.
const QUEUED_REQUESTS: usize = 16;
/// How long the API waits for the pipeline's answer. A batch boundary comes within a batch's
/// processing time (milliseconds to a second); a database outage stalls the loop, and then the
/// request is answered 503 rather than held open.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAction {
    /// Lift the quarantine (or backoff) of a plugin: its next call runs, with a fresh streak.
    Release {
        /// The plugin.
        plugin: String,
    },
    /// Stop a shadow detector and delete its files.
    Discard {
        /// The shadow.
        shadow: String,
    },
    /// Make a shadow detector the live detector it shadows (through the folder).
    Promote {
        /// The shadow.
        shadow: String,
    },
    /// Load every plugin of the folder again (each swaps with its state handed over).
    Reload,
}

/// Why an admin action was not done.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No running plugin of that name.
    #[error("no running plugin is named {0:?}")]
    NoSuchPlugin(String),
    /// The plugin is running normally: nothing to release.
    #[error("plugin {0:?} is neither quarantined nor backing off")]
    NotHeld(String),
    /// The plugin is not a shadow detector.
    #[error("plugin {0:?} is not a shadow")]
    NotAShadow(String),
    /// The host watches no plugins folder, so files cannot be loaded again.
    #[error("this host watches no plugins folder")]
    NoFolder,
    /// The host has no drop-in folder (`--plugins`) to write a promoted or discarded plugin's files
    /// in.
    #[error("this host has no drop-in plugins folder (--plugins) to change")]
    NoDropinFolder,
    /// The shadow's files are built-in plugins: the host changes only the drop-in folder.
    #[error("shadow {0:?} is a built-in plugin: only drop-ins are promoted or discarded")]
    BuiltIn(String),
    /// The shadow's manifest could not be rewritten for the live detector.
    #[error("cannot rewrite {file}: {message}")]
    Manifest {
        /// The file, by name.
        file: String,
        /// Why.
        message: String,
    },
    /// Changing a plugin's file failed.
    #[error("cannot change {file}: {source}")]
    Files {
        /// The file, by name (never the host's path).
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// No pipeline runs to do it (connecting or stopping).
    #[error("the pipeline is not running; try again once it is")]
    NotRunning,
    /// Too many requests wait, or the pipeline did not reach a batch boundary in time.
    #[error("the pipeline did not take the request in time; try again")]
    Busy,
}

/// A request and where its answer goes.
pub(crate) struct AdminRequest {
    action: AdminAction,
    reply: oneshot::Sender<Result<String, AdminError>>,
}

/// The channel between the API (any number of senders) and the pipeline (one receiver, taken
/// when it starts).
pub struct AdminChannel {
    sender: mpsc::Sender<AdminRequest>,
    receiver: Mutex<Option<mpsc::Receiver<AdminRequest>>>,
}

impl Default for AdminChannel {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUED_REQUESTS);
        AdminChannel { sender, receiver: Mutex::new(Some(receiver)) }
    }
}

impl AdminChannel {
    /// Asks the pipeline to do `action`; what it did, within [`ANSWER_WITHIN`].
    pub async fn ask(&self, action: AdminAction) -> Result<String, AdminError> {
        let (reply, answer) = oneshot::channel();
        self.sender.try_send(AdminRequest { action, reply }).map_err(|_| AdminError::Busy)?;
        match tokio::time::timeout(ANSWER_WITHIN, answer).await {
            Ok(Ok(answer)) => answer,
            // The pipeline dropped the request: it stopped.
            Ok(Err(_)) => Err(AdminError::NotRunning),
            Err(_) => Err(AdminError::Busy),
        }
    }

    /// The receiving end, for the pipeline (`None` once taken).
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<AdminRequest>> {
        self.receiver.lock().ok().and_then(|mut r| r.take())
    }
}

impl super::Pipeline {
    /// Does every admin request waiting (between batches), answering each. The batch in flight is
    /// committed first: its publication carries the plugins' state from before the request, and
    /// must not land after the answer and undo, in the live view, what the request did.
    pub(super) async fn apply_admin_requests(&mut self) -> Result<(), super::PipelineError> {
        let Some(requests) = self.admin.as_mut() else { return Ok(()) };
        let mut waiting = Vec::new();
        while let Ok(request) = requests.try_recv() {
            waiting.push(request);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        self.finish_in_flight().await?;
        for AdminRequest { action, reply } in waiting {
            let done = self.admin_action(&action);
            if done.is_ok() {
                self.live.set_plugins(self.plugin_statuses());
            }
            // The asker may have given up waiting; the action is done either way.
            let _ = reply.send(done);
        }
        Ok(())
    }

    fn admin_action(&mut self, action: &AdminAction) -> Result<String, AdminError> {
        match action {
            AdminAction::Release { plugin } => {
                if !self.lanes.contains(plugin) {
                    return Err(AdminError::NoSuchPlugin(plugin.clone()));
                }
                // Held where any lane's instance is held; released in every lane.
                let mut instances = self.lanes.instances(plugin);
                let state = instances.iter().map(|p| p.state()).find(|s| *s != PluginState::Running);
                let Some(state) = state else {
                    return Err(AdminError::NotHeld(plugin.clone()));
                };
                for instance in &mut instances {
                    instance.release_quarantine();
                }
                info!(plugin = %plugin, was = state.as_str(), "plugin released by an admin request");
                Ok(format!("plugin {plugin} released from {}", state.as_str()))
            }
            AdminAction::Discard { shadow } => {
                let found = self.lanes.loaded(shadow).ok_or_else(|| AdminError::NoSuchPlugin(shadow.clone()))?;
                if found.shadow_of().is_none() {
                    return Err(AdminError::NotAShadow(shadow.clone()));
                }
                let dir = self.shadow_folder(shadow)?;
                for extension in ["wasm", "toml", "json"] {
                    remove_if_there(&dir, &format!("{shadow}.{extension}"))?;
                }
                self.lanes.remove(shadow);
                let detail = "discarded by an admin request; its files were deleted".to_owned();
                info!(plugin = %shadow, "{detail}");
                self.live.plugin_event(shadow, PluginAction::Removed, detail.clone());
                Ok(format!("shadow {shadow} {detail}"))
            }
            AdminAction::Promote { shadow } => {
                let found = self.lanes.loaded(shadow).ok_or_else(|| AdminError::NoSuchPlugin(shadow.clone()))?;
                let live = found.shadow_of().ok_or_else(|| AdminError::NotAShadow(shadow.clone()))?.to_owned();
                let dir = self.shadow_folder(shadow)?;
                promote_files(&dir, shadow, &live)?;
                info!(plugin = %shadow, live = %live, "shadow promoted by an admin request");
                Ok(format!(
                    "shadow {shadow} promoted: its files are now {live}'s; the swap happens at a batch boundary"
                ))
            }
            AdminAction::Reload => {
                let reload = self.reload.as_mut().ok_or(AdminError::NoFolder)?;
                let loading = reload.reload_all();
                info!(plugins = loading, "every plugin reloading by an admin request");
                Ok(format!("{loading} plugins reloading; each is installed at a batch boundary once loaded"))
            }
        }
    }
}

impl super::Pipeline {
    /// The drop-in folder, which holds `shadow`'s files: the folder an admin action changes (the
    /// built-ins are the installation's, replaced by an upgrade).
    fn shadow_folder(&self, shadow: &str) -> Result<std::path::PathBuf, AdminError> {
        let folders = self.reload.as_ref().ok_or(AdminError::NoFolder)?.folders();
        let dropin = folders.dropin();
        match folders.locate(shadow) {
            Some(file) if file.layer == PluginLayer::BuiltIn => Err(AdminError::BuiltIn(shadow.to_owned())),
            _ => dropin.map(Path::to_owned).ok_or(AdminError::NoDropinFolder),
        }
    }
}

/// Makes `shadow`'s files in `dir` those of `live`: its configuration and manifest (without
/// `shadow_of`, its `name` made `live`'s) first, its component last, each written beside and
/// renamed (the watch never reads half a file), then deletes the shadow's files.
fn promote_files(dir: &Path, shadow: &str, live: &str) -> Result<(), AdminError> {
    let files = |file: String| move |source| AdminError::Files { file: file.clone(), source };
    let manifest = dir.join(format!("{shadow}.toml"));
    let manifest = match std::fs::read_to_string(&manifest) {
        Ok(text) => Some(
            live_manifest(&text, live)
                .map_err(|message| AdminError::Manifest { file: format!("{shadow}.toml"), message })?,
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(files(format!("{shadow}.toml"))(err)),
    };
    let config = match std::fs::read(dir.join(format!("{shadow}.json"))) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(files(format!("{shadow}.json"))(err)),
    };
    let component = std::fs::read(dir.join(format!("{shadow}.wasm"))).map_err(files(format!("{shadow}.wasm")))?;
    for (extension, bytes) in [("toml", manifest.map(String::into_bytes)), ("json", config), ("wasm", Some(component))]
    {
        let file = format!("{live}.{extension}");
        match bytes {
            Some(bytes) => {
                let partial = dir.join(format!(".{file}.partial"));
                std::fs::write(&partial, bytes).map_err(files(file.clone()))?;
                std::fs::rename(&partial, dir.join(&file)).map_err(files(file))?;
            }
            None => remove_if_there(dir, &file)?,
        }
    }
    for extension in ["wasm", "toml", "json"] {
        remove_if_there(dir, &format!("{shadow}.{extension}"))?;
    }
    Ok(())
}

/// Deletes `file` of `dir`; one already gone is fine.
fn remove_if_there(dir: &Path, file: &str) -> Result<(), AdminError> {
    match std::fs::remove_file(dir.join(file)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(AdminError::Files { file: file.to_owned(), source: err })
        }
        _ => Ok(()),
    }
}

/// A shadow's manifest as the live detector's: no `shadow_of`, and a `name` (if it has one) of
/// `live`. The rest (version, digest, configuration, limits, grants) is the shadow's.
fn live_manifest(text: &str, live: &str) -> Result<String, String> {
    let mut manifest: toml::Table = text.parse().map_err(|err: toml::de::Error| err.message().to_owned())?;
    manifest.remove("shadow_of");
    if manifest.contains_key("name") {
        manifest.insert("name".to_owned(), toml::Value::String(live.to_owned()));
    }
    toml::to_string(&manifest).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::live_manifest;

    #[test]
    fn a_promoted_manifest_loses_shadow_of_and_takes_the_live_name() {
        let shadow =
            "name = \"zscore-next\"\nversion = \"0.2.0\"\nshadow_of = \"zscore\"\n\n[config]\nthreshold = 2.0\n";
        let promoted: toml::Table = live_manifest(shadow, "zscore").expect("rewrites").parse().expect("toml");
        let expected: toml::Table =
            "name = \"zscore\"\nversion = \"0.2.0\"\n[config]\nthreshold = 2.0\n".parse().expect("toml");
        assert_eq!(promoted, expected);
        assert!(live_manifest("shadow_of = [", "zscore").is_err());
    }
}
