//! Real-time monitoring: the KPIs, live lines per sensor type (one line per sensor, anomalies
//! marked), where anomalies are by type and location, and the newest readings and detections.

use std::collections::BTreeMap;

use iotstream_api::{ReadingRow, SensorType};
use leptos::prelude::*;

use crate::chart::Chart;
use crate::components::kpis::Kpis;
use crate::components::tables::{DetectionsTable, ReadingsTable};
use crate::filters::{Filter, use_filter};
use crate::live::LiveFeed;
use crate::options::{self, Points};

/// The live chart of one sensor type: a line per sensor that passes the filter, flagged readings
/// as red dots.
fn live_lines(
    sensor_type: SensorType,
    points: &[&ReadingRow],
    filter: &Filter,
    sensor: Option<&str>,
) -> Option<serde_json::Value> {
    let mut lines: BTreeMap<String, Points> = BTreeMap::new();
    let mut marks = Vec::new();
    let mut unit = String::new();
    let shown = |r: &&&ReadingRow| {
        r.sensor_type == sensor_type && filter.admits_reading(r) && sensor.is_none_or(|s| s == r.sensor_id)
    };
    for r in points.iter().filter(shown) {
        let point = (r.timestamp.timestamp_millis(), r.value);
        lines.entry(r.sensor_id.clone()).or_default().push(point);
        if r.flagged {
            marks.push(point);
        }
        unit.clone_from(&r.unit);
    }
    options::time_lines(&lines, &marks, &unit)
}

/// Flagged readings among the live points that pass the filter, counted by `key`.
fn anomaly_counts(points: &[&ReadingRow], filter: &Filter, key: fn(&ReadingRow) -> String) -> Vec<(String, f64)> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for r in points.iter().filter(|r| filter.admits_reading(r)) {
        *counts.entry(key(r)).or_default() += if r.flagged { 1.0 } else { 0.0 };
    }
    counts.into_iter().collect()
}

/// The real-time tab.
#[component]
pub fn Realtime() -> impl IntoView {
    let feed = expect_context::<LiveFeed>();
    let filter = use_filter();
    // One sensor, picked by clicking its line (the anomaly dots are not a sensor).
    let (sensor, pick_sensor) = signal(None::<String>);
    let single = move || sensor.get().filter(|s| s != "anomaly");
    let types = move || filter.get().sensor_type.map_or_else(|| SensorType::ALL.to_vec(), |t| vec![t]);
    let counts = move |key: fn(&ReadingRow) -> String| {
        Signal::derive(move || {
            let points = feed.points.get();
            options::bars(&anomaly_counts(&points.iter().collect::<Vec<_>>(), &filter.get(), key), "anomalies")
        })
    };
    let readings = Signal::derive(move || {
        let filter = filter.get();
        feed.view.get().readings.into_iter().filter(|r| filter.admits_reading(r)).collect()
    });
    let detections = Signal::derive(move || {
        let filter = filter.get();
        feed.view
            .get()
            .detections
            .into_iter()
            .filter(|d| filter.sensor_type.is_none_or(|t| t == d.sensor_type))
            .collect()
    });
    view! {
        <Kpis stats=Signal::derive(move || feed.view.get().stats) />
        <Show when=move || single().is_some()>
            <p class="filters" id="single-sensor">"showing sensor " {single} " "
                <button on:click=move |_| pick_sensor.set(None)>"show all"</button></p>
        </Show>
        <section class="charts">
            {move || types().into_iter().map(|t| {
                let option = Signal::derive(move || {
                    let points = feed.points.get();
                    live_lines(t, &points.iter().collect::<Vec<_>>(), &filter.get(), single().as_deref())
                });
                let title = format!("{} (live; click a line for one sensor)", t.as_str());
                view! { <Chart id=format!("live-{}", t.as_str()) title=Signal::stored(title) option=option picked=pick_sensor /> }
            }).collect_view()}
        </section>
        <section class="grid">
            <Chart id="anomalies-by-type" title=Signal::stored("Anomalies by sensor type (live points)".to_owned())
                option=counts(|r| r.sensor_type.as_str().to_owned()) />
            <Chart id="anomalies-by-location" title=Signal::stored("Anomalies by location (live points)".to_owned())
                option=counts(|r| r.location.clone()) />
        </section>
        <section class="grid">
            <ReadingsTable rows=readings />
            <DetectionsTable rows=detections />
        </section>
    }
}
