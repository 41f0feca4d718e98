//! Admin actions on the running plugins (lift a quarantine, discard a shadow, reload every plugin
//! from its folder), asked over the API. The pipeline owns the plugins on its own task, so a
//! request does not touch them: it goes through a channel the pipeline drains at batch boundaries,
//! as the folder's changes do ([`super::reload`]), and the answer comes back on a oneshot.
//!
//! What must survive a restart is done to the folder as well: a discarded shadow's files are
//! deleted, so it does not come back at the next start (the watch then finds it gone and stopped).

use std::sync::Mutex;
use std::time::Duration;

use iotstream_api::{Named, PluginAction, PluginState};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

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
    /// The host watches no plugins folder, so files cannot be changed or loaded again.
    #[error("this host watches no plugins folder")]
    NoFolder,
    /// Deleting a plugin's file failed.
    #[error("cannot delete {file}: {source}")]
    Files {
        /// The file, by name (never the host's path).
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// No pipeline runs to do it (connecting, standby, or stopping).
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
    /// Does every admin request waiting (between batches), answering each.
    pub(super) fn apply_admin_requests(&mut self) {
        let Some(requests) = self.admin.as_mut() else { return };
        let mut waiting = Vec::new();
        while let Ok(request) = requests.try_recv() {
            waiting.push(request);
        }
        for AdminRequest { action, reply } in waiting {
            let done = self.admin_action(&action);
            if done.is_ok() {
                self.live.set_plugins(self.plugin_statuses());
            }
            // The asker may have given up waiting; the action is done either way.
            let _ = reply.send(done);
        }
    }

    fn admin_action(&mut self, action: &AdminAction) -> Result<String, AdminError> {
        match action {
            AdminAction::Release { plugin } => {
                let found = self.stages.get_mut(plugin).ok_or_else(|| AdminError::NoSuchPlugin(plugin.clone()))?;
                let state = found.state();
                if state == PluginState::Running {
                    return Err(AdminError::NotHeld(plugin.clone()));
                }
                found.release_quarantine();
                info!(plugin = %plugin, was = state.as_str(), "plugin released by an admin request");
                Ok(format!("plugin {plugin} released from {}", state.as_str()))
            }
            AdminAction::Discard { shadow } => {
                let found = self.stages.get_mut(shadow).ok_or_else(|| AdminError::NoSuchPlugin(shadow.clone()))?;
                if found.shadow_of().is_none() {
                    return Err(AdminError::NotAShadow(shadow.clone()));
                }
                let dir = self.reload.as_ref().ok_or(AdminError::NoFolder)?.dir().to_owned();
                for extension in ["wasm", "toml", "json"] {
                    let file = format!("{shadow}.{extension}");
                    match std::fs::remove_file(dir.join(&file)) {
                        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                            return Err(AdminError::Files { file, source: err });
                        }
                        _ => {}
                    }
                }
                self.stages.remove(shadow);
                let detail = "discarded by an admin request; its files were deleted".to_owned();
                info!(plugin = %shadow, "{detail}");
                self.live.plugin_event(shadow, PluginAction::Removed, detail.clone());
                Ok(format!("shadow {shadow} {detail}"))
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
