//! The live stream: an `EventSource` on `/api/stream` whose `snapshot`, `batch` and `plugin` events
//! are folded into a [`LiveView`] signal (and whose `rebalance` events are counted, for the panels
//! that read the group's state from the API again on one), and whose readings are kept, a bounded number, as the
//! live charts' points. The browser reconnects by itself after an error, and the host answers every
//! connection with a fresh snapshot, so nothing is ever stale for long. Events are folded in at most
//! every [`FLUSH`]: a busy host sends dozens of batches a second, and redrawing every chart for each
//! would keep the page's main thread busy all the time.

use std::cell::RefCell;
use std::rc::Rc;

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

/// How often the events received are folded into the page's signals, so how often live charts
/// redraw at most: once a second, as live as a monitoring page needs (the seed's refreshed every
/// 10 s), where folding the events four times a second kept the main thread 94 % busy
/// at 1,300 readings/s on two shared cores, ECharts' redraws costing most of it.
pub const FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Rebalances of this host's consumer group seen on the stream (a panel tracking it reads
    /// `/api/partitions` again on each).
    pub rebalances: ReadSignal<u64>,
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

/// Folds `events` (oldest first) into the view and the live points.
fn fold(view: &mut LiveView, points: &mut VecDeque<ReadingRow>, events: Vec<LiveEvent>) {
    for event in events {
        match &event {
            LiveEvent::Snapshot { readings, .. } => {
                let newest = points.iter().map(|r| r.timestamp).max();
                append(points, readings, newest);
            }
            LiveEvent::Batch { readings, .. } => append(points, readings, None),
            LiveEvent::Plugin { .. } | LiveEvent::Rebalance { .. } => {}
        }
        view.apply(event);
    }
}

/// Opens the stream and returns what it keeps up to date.
pub fn connect(url: &str) -> LiveFeed {
    let (view, set_view) = signal(LiveView::default());
    let (connection, set_connection) = signal(Connection::Connecting);
    let (points, set_points) = signal(VecDeque::new());
    let (rebalances, set_rebalances) = signal(0_u64);
    let feed = LiveFeed { view, connection, points, rebalances };
    let source = match EventSource::new(url) {
        Ok(source) => source,
        Err(_) => {
            set_connection.set(Connection::Lost);
            return feed;
        }
    };
    // Events wait here for the next flush.
    let pending: Rc<RefCell<Vec<LiveEvent>>> = Rc::new(RefCell::new(Vec::new()));
    let received = pending.clone();
    let on_event = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else { return };
        let Ok(event) = serde_json::from_str::<LiveEvent>(&text) else { return };
        received.borrow_mut().push(event);
        if connection.get_untracked() != Connection::Live {
            set_connection.set(Connection::Live);
        }
    });
    // The stream lives as long as the page, and so does its flush.
    set_interval(
        move || {
            let events = std::mem::take(&mut *pending.borrow_mut());
            if events.is_empty() {
                return;
            }
            let moved = events.iter().filter(|e| matches!(e, LiveEvent::Rebalance { .. })).count() as u64;
            if moved > 0 {
                set_rebalances.update(|seen| *seen += moved);
            }
            set_points.update(|points| set_view.update(|view| fold(view, points, events)));
        },
        FLUSH,
    );
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| set_connection.set(Connection::Lost));
    for name in ["snapshot", "batch", "plugin", "rebalance"] {
        let _ = source.add_event_listener_with_callback(name, on_event.as_ref().unchecked_ref());
    }
    let _ = source.add_event_listener_with_callback("error", on_error.as_ref().unchecked_ref());
    // The stream lives as long as the page: hand the callbacks to the browser for good.
    on_event.forget();
    on_error.forget();
    std::mem::forget(source);
    feed
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_api::{SensorType, Stats};

    fn reading(n: i64) -> ReadingRow {
        ReadingRow {
            sensor_id: format!("s{n}"),
            sensor_type: SensorType::Co2,
            location: "lab".into(),
            value: n as f64,
            unit: "ppm".into(),
            timestamp: DateTime::from_timestamp(n, 0).unwrap_or_default(),
            anomaly: false,
            flagged: false,
        }
    }

    fn batch(newest_first: Vec<ReadingRow>, total: u64) -> LiveEvent {
        LiveEvent::Batch {
            stats: Stats { readings_total: total, ..Stats::default() },
            readings: newest_first,
            detections: Vec::new(),
            aggregates: Vec::new(),
            plugins: Vec::new(),
        }
    }

    #[test]
    fn events_folded_together_keep_their_order_and_a_repeated_snapshot_adds_nothing() {
        let (mut view, mut points) = (LiveView::default(), VecDeque::new());
        // Two batches and, after a reconnect, a snapshot repeating the newest readings.
        let snapshot = LiveEvent::Snapshot {
            stats: Stats { readings_total: 4, ..Stats::default() },
            readings: vec![reading(4), reading(3)],
            detections: Vec::new(),
            aggregates: Vec::new(),
            plugins: Vec::new(),
            plugin_events: Vec::new(),
        };
        fold(
            &mut view,
            &mut points,
            vec![batch(vec![reading(2), reading(1)], 2), batch(vec![reading(4), reading(3)], 4), snapshot],
        );
        let ids: Vec<&str> = points.iter().map(|r| r.sensor_id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2", "s3", "s4"]);
        assert_eq!(view.stats.readings_total, 4);
        assert_eq!(view.readings.len(), 2);
    }
}
