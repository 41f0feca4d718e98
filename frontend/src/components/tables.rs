//! Live tables: newest readings, detections, the plugins and what happened to them.

use iotstream_api::{Named, PluginAction, PluginEvent, PluginState, PluginStatus, PredictionRow, ReadingRow};
use leptos::prelude::*;

use crate::admin::Admin;

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

/// The newest readings; flagged ones highlighted.
#[component]
pub fn ReadingsTable(
    /// Newest first.
    rows: Signal<Vec<ReadingRow>>,
) -> impl IntoView {
    view! {
        <div class="panel">
            <h2>"Newest readings"</h2>
            <table id="readings">
                <thead><tr><th>"time"</th><th>"sensor"</th><th>"location"</th><th>"type"</th><th>"value"</th><th>"flag"</th></tr></thead>
                <tbody>
                    {move || rows.get().into_iter().map(|r| {
                        let class = if r.flagged { "flagged" } else { "" };
                        view! {
                        <tr class=class>
                            <td>{time(&r.timestamp)}</td>
                            <td>{r.sensor_id}</td>
                            <td>{r.location}</td>
                            <td>{r.sensor_type.as_str()}</td>
                            <td class="num">{format!("{:.2} {}", r.value, r.unit)}</td>
                            <td>{if r.flagged { "anomaly" } else { "" }}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// The newest anomalies any detector reported.
#[component]
pub fn DetectionsTable(
    /// Newest first.
    rows: Signal<Vec<PredictionRow>>,
) -> impl IntoView {
    view! {
        <div class="panel">
            <h2>"Newest detections"</h2>
            <table id="detections">
                <thead><tr><th>"time"</th><th>"detector"</th><th>"sensor"</th><th>"value"</th><th>"score"</th><th>"labelled"</th></tr></thead>
                <tbody>
                    {move || rows.get().into_iter().map(|d| view! {
                        <tr>
                            <td>{time(&d.timestamp)}</td>
                            <td>{d.detector}</td>
                            <td>{d.sensor_id}</td>
                            <td class="num">{format!("{:.2}", d.value)}</td>
                            <td class="num">{format!("{:.3}", d.anomaly_score)}</td>
                            <td>{if d.rule_based_anomaly { "yes" } else { "no" }}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// Every loaded plugin with its counters, its health (running, in backoff after failures, or
/// quarantined), the plugins folder it runs from (`built_in` or `drop_in`) and its resources (linear memory, with the
/// times a checkpoint replaced a grown instance in its tooltip, last exported state, call-time percentiles).
#[component]
pub fn PluginsTable(
    /// The plugins.
    rows: Signal<Vec<PluginStatus>>,
    /// The admin token: with one, a plugin in backoff or quarantine gets a release button.
    admin: Admin,
) -> impl IntoView {
    view! {
        <div class="panel">
            <h2>"Plugins"</h2>
            <table id="plugins">
                <thead><tr>
                    <th>"name"</th><th>"kind"</th><th>"version"</th><th>"contract"</th><th>"state"</th><th>"folder"</th><th>"calls"</th>
                    <th>"readings"</th><th>"outputs"</th><th>"errors"</th><th>"in a row"</th><th>"restarts"</th>
                    <th>"skipped"</th><th>"memory"</th><th>"state size"</th><th>"p50 µs"</th><th>"p99 µs"</th>
                    <th>"last error"</th><th></th>
                </tr></thead>
                <tbody>
                    {move || rows.get().into_iter().map(|p| {
                        let class = if p.state != PluginState::Running || p.consecutive_failures > 0 { "failing" } else { "" };
                        let release = release_button(admin, &p.name, p.state);
                        view! {
                        <tr class=class>
                            <td>{p.name}</td>
                            <td>{p.kind.as_str()}</td>
                            <td>{p.version}</td>
                            <td>{p.contract}</td>
                            <td>{p.state.as_str()}</td>
                            <td>{p.layer.map(|layer| layer.as_str()).unwrap_or_default()}</td>
                            <td class="num">{p.calls}</td>
                            <td class="num">{p.readings_in}</td>
                            <td class="num">{p.outputs}</td>
                            <td class="num">{p.errors}</td>
                            <td class="num">{p.consecutive_failures}</td>
                            <td class="num">{p.restarts}</td>
                            <td class="num">{p.skipped_readings}</td>
                            <td class="num" title=format!("linear memory; replaced {} times at checkpoints by a fresh instance holding its state, its memory grown past its ceiling", p.memory_replacements)>{bytes(p.memory_bytes)}</td>
                            <td class="num">{bytes(p.state_bytes)}</td>
                            <td class="num">{format!("{:.0}", p.p50_call_micros)}</td>
                            <td class="num">{format!("{:.0}", p.p99_call_micros)}</td>
                            <td>{p.last_error.unwrap_or_default()}</td>
                            <td>{release}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A release button for a held plugin, when an admin token was typed in.
fn release_button(admin: Admin, name: &str, state: PluginState) -> impl IntoView + use<> {
    let path = format!("/api/admin/plugins/{name}/release");
    let id = format!("release-{name}");
    (admin.enabled() && state != PluginState::Running)
        .then(|| view! { <button id=id on:click=move |_| admin.act(path.clone())>"release"</button> })
}

/// What happened to plugins while the host ran: loads, hot swaps (with the state hand-off and the
/// pause), removals and refused files.
#[component]
pub fn PluginEventsTable(
    /// Newest first.
    rows: Signal<Vec<PluginEvent>>,
) -> impl IntoView {
    view! {
        <div class="panel">
            <h2>"Plugin events"</h2>
            <table id="plugin-events">
                <thead><tr><th>"time"</th><th>"plugin"</th><th>"event"</th><th>"detail"</th></tr></thead>
                <tbody>
                    {move || rows.get().into_iter().map(|e| {
                        let class = if e.action == PluginAction::Refused { "failing" } else { "" };
                        view! {
                        <tr class=class>
                            <td>{time(&e.at)}</td>
                            <td>{e.plugin}</td>
                            <td>{e.action.as_str()}</td>
                            <td>{e.detail}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// A size in B, KiB or MiB, whichever keeps it short.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}
