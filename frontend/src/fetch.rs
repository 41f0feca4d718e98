//! Reads from the host's JSON API: one typed GET, its failure as a sentence for the page, and a
//! tick that refreshes what is not pushed on the live stream.

use leptos::prelude::*;
use serde::de::DeserializeOwned;

/// How often the API-backed panels (quality, shadows, windows, dead letters) are read again: the
/// seed's dashboard refreshed every 10 s, and these queries aggregate, so faster buys little.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET url` as `T`; an error is a short sentence naming what failed (the API's own message when
/// it sent one).
pub async fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, String> {
    let response = gloo_net::http::Request::get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.ok() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no message").to_owned();
        return Err(format!("{url}: {} {message}", response.status()));
    }
    response.json::<T>().await.map_err(|e| format!("{url}: unreadable answer: {e}"))
}

/// A counter that goes up every [`REFRESH`] while the calling component lives: a resource that
/// reads it is fetched again on each tick.
pub fn refresh_tick() -> ReadSignal<u64> {
    tick_every(REFRESH)
}

/// A counter that goes up every `period` while the calling component lives.
pub fn tick_every(period: std::time::Duration) -> ReadSignal<u64> {
    let (tick, set_tick) = signal(0_u64);
    if let Ok(handle) = set_interval_with_handle(move || set_tick.update(|t| *t += 1), period) {
        on_cleanup(move || handle.clear());
    }
    tick
}

/// The state of an API read, drawn the same way everywhere: loading, failed, or its view.
pub fn loaded<T: Clone + 'static, V: IntoView + 'static>(
    value: Option<Result<T, String>>,
    view: impl FnOnce(T) -> V,
) -> AnyView {
    match value {
        None => view! { <p class="empty">"loading…"</p> }.into_any(),
        Some(Err(error)) => view! { <p class="error">{error}</p> }.into_any(),
        Some(Ok(value)) => view(value).into_any(),
    }
}
