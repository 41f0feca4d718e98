//! The live stream: an `EventSource` on `/api/stream` whose `snapshot`, `batch` and `plugin` events
//! are folded into a [`LiveView`] signal. The browser reconnects by itself after an error, and the
//! host answers every connection with a fresh snapshot, so nothing is ever stale for long.

use iotstream_api::{LiveEvent, LiveView};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{EventSource, MessageEvent};

/// Whether the stream is connected, for the status badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Opening or re-opening.
    Connecting,
    /// Receiving events.
    Live,
    /// The last attempt failed; the browser retries.
    Lost,
}

/// Opens the stream and returns the view and the connection state it keeps up to date.
pub fn connect(url: &str) -> (ReadSignal<LiveView>, ReadSignal<Connection>) {
    let (view, set_view) = signal(LiveView::default());
    let (connection, set_connection) = signal(Connection::Connecting);
    let source = match EventSource::new(url) {
        Ok(source) => source,
        Err(_) => {
            set_connection.set(Connection::Lost);
            return (view, connection);
        }
    };
    let on_event = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(text) = event.data().as_string() else { return };
        if let Ok(event) = serde_json::from_str::<LiveEvent>(&text) {
            set_view.update(|view| view.apply(event));
            set_connection.set(Connection::Live);
        }
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
    (view, connection)
}
