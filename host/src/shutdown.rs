//! Graceful shutdown: the signals that stop the process, registered before start-up so a SIGTERM
//! while the host starts still stops it gracefully instead of killing it.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// The signals that stop the host, registered when created (so none is missed while it starts).
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers SIGINT and SIGTERM (a signal that cannot be registered is never received).
    pub fn register() -> Self {
        #[cfg(unix)]
        let listen = |kind| tokio::signal::unix::signal(kind).ok();
        Signals {
            #[cfg(unix)]
            interrupt: listen(tokio::signal::unix::SignalKind::interrupt()),
            #[cfg(unix)]
            terminate: listen(tokio::signal::unix::SignalKind::terminate()),
        }
    }

    /// Cancels `shutdown` on SIGINT (Ctrl-C) or SIGTERM.
    #[cfg(unix)]
    pub async fn cancel_on_signal(self, shutdown: CancellationToken) {
        async fn received(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = received(self.interrupt) => {},
            _ = received(self.terminate) => {},
        }
        info!("shutdown requested");
        shutdown.cancel();
    }

    /// Cancels `shutdown` on Ctrl-C.
    #[cfg(not(unix))]
    pub async fn cancel_on_signal(self, shutdown: CancellationToken) {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown requested");
        shutdown.cancel();
    }
}
