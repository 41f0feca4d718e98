//! The dashboard page: status, KPI cards, and live tables of readings, detections, windows, the
//! plugins and their events.

use leptos::prelude::*;

use crate::admin::{Admin, AdminBar};
use crate::components::kpis::Kpis;
use crate::components::tables::{AggregatesTable, DetectionsTable, PluginEventsTable, PluginsTable, ReadingsTable};
use crate::live::{Connection, connect};

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let (view, connection) = connect("/api/stream");
    let admin = Admin::new();
    let status = move || match connection.get() {
        Connection::Connecting => ("connecting", "status connecting"),
        Connection::Live => ("live", "status live"),
        Connection::Lost => ("reconnecting", "status lost"),
    };
    let database = move || {
        let stats = view.get().stats;
        let mut warnings = Vec::new();
        if !stats.database_ok {
            warnings.push("database unavailable: retrying (nothing is lost; consuming is paused)".to_owned());
        }
        if !stats.broker_ok {
            warnings.push("Kafka brokers unreachable: reconnecting".to_owned());
        }
        for failure in &stats.plugin_failures {
            warnings.push(format!("plugin {} refused: {}", failure.plugin, failure.error));
        }
        warnings.join(" · ")
    };
    view! {
        <header>
            <h1>"iotstream"</h1>
            <span id="connection" class=move || status().1>{move || status().0}</span>
            <span class="warning">{database}</span>
        </header>
        <main>
            <Kpis stats=Signal::derive(move || view.get().stats) />
            <section class="grid">
                <ReadingsTable rows=Signal::derive(move || view.get().readings) />
                <DetectionsTable rows=Signal::derive(move || view.get().detections) />
            </section>
            <AggregatesTable rows=Signal::derive(move || view.get().aggregates) />
            <AdminBar admin=admin />
            <PluginsTable rows=Signal::derive(move || view.get().plugins) admin=admin />
            <PluginEventsTable rows=Signal::derive(move || view.get().plugin_events) />
        </main>
    }
}
