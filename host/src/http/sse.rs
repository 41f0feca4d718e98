//! `GET /api/stream`: the live view as server-sent events. A `snapshot` event on connection, then a
//! `batch` event per committed batch, a `plugin` event per plugin change and a `rebalance` event per
//! rebalance of this host's consumer group; a subscriber that falls
//! behind gets a fresh snapshot instead of the events it missed. Every stream ends at shutdown, so a
//! graceful shutdown does not wait on open dashboards.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use iotstream_api::LiveEvent;
use tokio::sync::broadcast;

use super::{ApiError, ApiState};

/// The handler: one stream per connected dashboard.
/// Refused (503, `too_many_streams`) while every stream slot is taken; the slot is given back
/// when the stream ends.
pub(super) async fn stream(
    State(state): State<ApiState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| ApiError::TooManyStreams)?;
    let (snapshot, receiver) = state.live.subscribe();
    let events =
        stream::unfold((state.live.clone(), receiver, Some(snapshot)), |(live, mut receiver, pending)| async move {
            let event = match pending {
                Some(event) => event,
                None => match receiver.recv().await {
                    Ok(event) => event,
                    // Fell behind: skip to a fresh snapshot rather than replaying stale batches.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (snapshot, fresh) = live.subscribe();
                        receiver = fresh;
                        snapshot
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok(sse_event(&event)), (live, receiver, None)))
        });
    // The permit lives as long as the stream.
    let events = events.take_until(state.shutdown.cancelled_owned()).map(move |event| {
        let _held = &permit;
        event
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn sse_event(event: &LiveEvent) -> Event {
    let name = match event {
        LiveEvent::Snapshot { .. } => "snapshot",
        LiveEvent::Batch { .. } => "batch",
        LiveEvent::Plugin { .. } => "plugin",
        LiveEvent::Rebalance { .. } => "rebalance",
    };
    // LiveEvent is plain data: serialisation cannot fail; an empty event would be harmless anyway.
    Event::default().event(name).data(serde_json::to_string(event).unwrap_or_default())
}
