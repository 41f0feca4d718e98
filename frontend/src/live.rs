//! The live stream: an `EventSource` on `/api/stream` whose `snapshot`, `batch` and `plugin` events
//! are folded into a [`LiveView`] signal, and whose readings are kept, a bounded number, as the
//! live charts' points. The browser reconnects by itself after an error, and the host answers every
//! connection with a fresh snapshot, so nothing is ever stale for long.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use iotstream_api::{LiveEvent, LiveView, ReadingRow};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

/// Readings the live charts keep: about 3 minutes of the simulator's 300 readings/s as the stream
/// samples them (at most 50 a batch), enough for a trend, and a fixed cost per redraw however long
/// the tab stays open.
pub const LIVE_POINTS: usize = 3000;

/// Whether the stream is connected, for the status badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Opening, before the first snapshot: nothing is known yet, so no outage is reported.
    Connecting,
    /// Receiving events.
    Live,
    /// The last attempt failed; the browser retries.
    Lost,
}

/// What the live stream feeds the page.
#[derive(Clone, Copy)]
pub struct LiveFeed {
    /// The fold of every event.
    pub view: ReadSignal<LiveView>,
    /// The connection state.
    pub connection: ReadSignal<Connection>,
    /// The newest readings seen, oldest first, at most [`LIVE_POINTS`].
    pub points: ReadSignal<VecDeque<ReadingRow>>,
}

/// Appends `readings` (newest first, as events carry them) to `points`, oldest first, skipping
/// those not newer than `since` (a snapshot after a reconnect repeats readings already kept).
fn append(points: &mut VecDeque<ReadingRow>, readings: &[ReadingRow], since: Option<DateTime<Utc>>) {
    for reading in readings.iter().rev() {
        if since.is_none_or(|t| reading.timestamp > t) {
            points.push_back(reading.clone());
        }
    }
    while points.len() > LIVE_POINTS {
        points.pop_front();
    }
}

/// Opens the stream and returns what it keeps up to date.
pub fn connect(url: &str) -> LiveFeed {
    let (view, set_view) = signal(LiveView::default());
    let (connection, set_connection) = signal(Connection::Connecting);
    let (points, set_points) = signal(VecDeque::new());
    let feed = LiveFeed { view, connection, points };
    let source = match EventSource::new(url) {
        Ok(source) => source,
        Err(_) => {
            set_connection.set(Connection::Lost);
            return feed;
        }
    };
    let on_event = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else { return };
        let Ok(event) = serde_json::from_str::<LiveEvent>(&text) else { return };
        match &event {
            LiveEvent::Snapshot { readings, .. } => set_points.update(|p| {
                let newest = p.iter().map(|r| r.timestamp).max();
                append(p, readings, newest)
            }),
            LiveEvent::Batch { readings, .. } => set_points.update(|p| append(p, readings, None)),
            LiveEvent::Plugin { .. } => {}
        }
        set_view.update(|view| view.apply(event));
        set_connection.set(Connection::Live);
    });
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| set_connection.set(Connection::Lost));
    for name in ["snapshot", "batch", "plugin"] {
        let _ = source.add_event_listener_with_callback(name, on_event.as_ref().unchecked_ref());
    }
    let _ = source.add_event_listener_with_callback("error", on_error.as_ref().unchecked_ref());
    // The stream lives as long as the page: hand the callbacks to the browser for good.
    on_event.forget();
    on_error.forget();
    std::mem::forget(source);
    feed
}
