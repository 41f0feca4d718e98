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

/// Lines a live chart draws at most: past a dozen, lines blur into each other and the legend into
/// a list, and each one costs every redraw, while one location of a large fleet has hundreds of
/// sensors of a type. The rest are a location filter or a click away.
const MAX_LINES: usize = 12;

/// The live chart of one sensor type: a line per sensor that passes the filter (at most
/// [`MAX_LINES`]: those with the most flagged readings, then those heard from last), flagged
/// readings as red dots; and how many sensors passed the filter.
fn live_lines(
    sensor_type: SensorType,
    points: &[&ReadingRow],
    filter: &Filter,
    sensor: Option<&str>,
) -> (Option<serde_json::Value>, usize) {
    let mut lines: BTreeMap<String, Points> = BTreeMap::new();
    let mut flagged: BTreeMap<&str, usize> = BTreeMap::new();
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
            *flagged.entry(&r.sensor_id).or_default() += 1;
        }
        unit.clone_from(&r.unit);
    }
    let sensors = lines.len();
    if sensors > MAX_LINES {
        let mut ranked: Vec<(usize, i64, &String)> = lines
            .iter()
            .map(|(id, p)| {
                let newest = p.iter().map(|(t, _)| *t).max().unwrap_or(i64::MIN);
                (flagged.get(id.as_str()).copied().unwrap_or(0), newest, id)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
        let kept: std::collections::BTreeSet<String> =
            ranked.into_iter().take(MAX_LINES).map(|r| r.2.clone()).collect();
        lines.retain(|id, _| kept.contains(id));
    }
    (options::time_lines(&lines, &marks, &unit), sensors)
}

/// A live chart's title: what it shows, and how to see the sensors it leaves out.
fn live_title(sensor_type: SensorType, sensors: usize) -> String {
    let name = sensor_type.as_str();
    if sensors > MAX_LINES {
        format!(
            "{name} (live; {MAX_LINES} of {sensors} sensors, most anomalous first: pick a location, or click a line)"
        )
    } else {
        format!("{name} (live; click a line for one sensor)")
    }
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
    // A memo: the bars are redrawn only when a count changes, not on every batch.
    let counts = move |key: fn(&ReadingRow) -> String| {
        let counted = Memo::new(move |_| {
            let points = feed.points.get();
            options::bars(&anomaly_counts(&points.iter().collect::<Vec<_>>(), &filter.get(), key), "anomalies")
        });
        Signal::from(counted)
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
                let drawn = Memo::new(move |_| {
                    let points = feed.points.get();
                    live_lines(t, &points.iter().collect::<Vec<_>>(), &filter.get(), single().as_deref())
                });
                let option = Signal::derive(move || drawn.with(|d| d.0.clone()));
                let title = Signal::derive(move || live_title(t, drawn.with(|d| d.1)));
                view! { <Chart id=format!("live-{}", t.as_str()) title=title option=option picked=pick_sensor /> }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn reading(sensor: usize, second: i64, flagged: bool) -> ReadingRow {
        ReadingRow {
            sensor_id: format!("t-{sensor:02}"),
            sensor_type: SensorType::Temperature,
            location: "hall".into(),
            value: 20.0,
            unit: "celsius".into(),
            timestamp: DateTime::from_timestamp(second, 0).unwrap_or_default(),
            anomaly: false,
            flagged,
        }
    }

    /// The series names of a chart option, anomaly dots left out.
    fn lines(option: &serde_json::Value) -> Vec<String> {
        let series = option["series"].as_array().cloned().unwrap_or_default();
        series.iter().filter_map(|s| s["name"].as_str()).filter(|n| *n != "anomaly").map(str::to_owned).collect()
    }

    #[test]
    fn a_chart_draws_at_most_a_dozen_lines_the_anomalous_and_newest_first() {
        // 20 sensors, sensor n last heard at second n; sensors 0 and 1 flagged (twice and once).
        let mut rows: Vec<ReadingRow> = (0..20).map(|n| reading(n, n as i64, false)).collect();
        rows.extend([reading(0, 0, true), reading(0, 0, true), reading(1, 1, true)]);
        let refs: Vec<&ReadingRow> = rows.iter().collect();
        let (option, sensors) = live_lines(SensorType::Temperature, &refs, &Filter::default(), None);
        assert_eq!(sensors, 20);
        let mut expected: Vec<String> =
            [0, 1, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10].iter().map(|n| format!("t-{n:02}")).collect();
        expected.sort();
        assert_eq!(lines(&option.unwrap_or_default()), expected);
        assert!(live_title(SensorType::Temperature, sensors).contains("12 of 20 sensors"));
        // A dozen or fewer: every one, and one sensor when one was picked.
        let (option, sensors) = live_lines(SensorType::Temperature, &refs[..12], &Filter::default(), None);
        assert_eq!((lines(&option.unwrap_or_default()).len(), sensors), (12, 12));
        let (option, _) = live_lines(SensorType::Temperature, &refs, &Filter::default(), Some("t-05"));
        assert_eq!(lines(&option.unwrap_or_default()), ["t-05"]);
    }
}
