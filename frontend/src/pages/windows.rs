//! Windowed aggregates: the 1-minute windows as trends (average with its min-max band, stddev,
//! readings and anomalies per window) and a sortable table where revised and late windows show.

use std::collections::BTreeMap;

use iotstream_api::{AggregateRow, SensorType};
use leptos::prelude::*;

use crate::chart::Chart;
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::filters::use_filter;
use crate::options::{self, Points};

/// Windows the tab reads: the API's most, about 3 hours of 5 types at 4 locations.
const WINDOWS: usize = 1000;

/// A column the table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Start,
    Location,
    Type,
    Count,
    Avg,
    Anomalies,
    Revision,
}

/// `rows` sorted by `column`, descending when `descending`.
fn sorted(mut rows: Vec<AggregateRow>, column: Column, descending: bool) -> Vec<AggregateRow> {
    rows.sort_by(|a, b| {
        let order = match column {
            Column::Start => a.window_start.cmp(&b.window_start),
            Column::Location => a.location.cmp(&b.location),
            Column::Type => a.sensor_type.cmp(&b.sensor_type),
            Column::Count => a.count_readings.cmp(&b.count_readings),
            Column::Avg => a.avg_value.total_cmp(&b.avg_value),
            Column::Anomalies => a.anomaly_count.cmp(&b.anomaly_count),
            Column::Revision => a.revision.cmp(&b.revision),
        };
        if descending { order.reverse() } else { order }
    });
    rows
}

/// The windows tab.
#[component]
pub fn Windows() -> impl IntoView {
    let filter = use_filter();
    let tick = refresh_tick();
    let windows = LocalResource::new(move || {
        tick.track();
        let url = format!("/api/aggregates?limit={WINDOWS}");
        async move { get_json::<Vec<AggregateRow>>(&url).await }
    });
    let rows = move || {
        let filter = filter.get();
        windows.get().map(|r| {
            r.map(|rows| rows.into_iter().filter(|a| filter.admits(a.sensor_type, &a.location)).collect::<Vec<_>>())
        })
    };
    let band = move |t: SensorType| {
        Signal::derive(move || {
            let mut lines: BTreeMap<String, Vec<(i64, f64, f64, f64)>> = BTreeMap::new();
            for a in rows().and_then(Result::ok).unwrap_or_default().into_iter().filter(|a| a.sensor_type == t) {
                lines.entry(a.location).or_default().push((
                    a.window_start.timestamp_millis(),
                    a.avg_value,
                    a.min_value,
                    a.max_value,
                ));
            }
            lines.values_mut().for_each(|l| l.sort_by_key(|p| p.0));
            options::banded_lines(&lines)
        })
    };
    let per_window = move |f: fn(&AggregateRow) -> f64| {
        Signal::derive(move || {
            let mut lines: BTreeMap<String, Points> = BTreeMap::new();
            for a in rows().and_then(Result::ok).unwrap_or_default() {
                lines
                    .entry(format!("{} {}", a.sensor_type.as_str(), a.location))
                    .or_default()
                    .push((a.window_start.timestamp_millis(), f(&a)));
            }
            lines.values_mut().for_each(|l| l.sort_by_key(|p| p.0));
            options::time_lines(&lines, &Vec::new(), "")
        })
    };
    let types = move || filter.get().sensor_type.map_or_else(|| SensorType::ALL.to_vec(), |t| vec![t]);
    let (sort, set_sort) = signal((Column::Start, true));
    let header = move |label: &'static str, column: Column| {
        view! {
            <th class="sortable" on:click=move |_| set_sort.update(|(c, d)| { *d = if *c == column { !*d } else { true }; *c = column; })>
                {label}{move || if sort.get().0 == column { if sort.get().1 { " ▼" } else { " ▲" } } else { "" }}
            </th>
        }
    };
    view! {
        <section class="charts">
            {move || types().into_iter().map(|t| view! {
                <Chart id=format!("window-{}", t.as_str()) title=Signal::stored(format!("{}: window average, min–max band", t.as_str())) option=band(t) />
            }).collect_view()}
        </section>
        <section class="grid">
            <Chart id="window-stddev" title=Signal::stored("Standard deviation per window".to_owned()) option=per_window(|a| a.stddev_value) />
            <Chart id="window-counts" title=Signal::stored("Readings per window".to_owned()) option=per_window(|a| f64::from(a.count_readings)) />
            <Chart id="window-anomalies" title=Signal::stored("Anomalies per window".to_owned()) option=per_window(|a| f64::from(a.anomaly_count)) />
        </section>
        <div class="panel">
            <h2>"Windows (click a heading to sort; revised windows marked)"</h2>
            {move || loaded(rows(), move |rows| view! {
                <table id="windows">
                    <thead><tr>{header("window", Column::Start)}{header("location", Column::Location)}{header("type", Column::Type)}
                        {header("count", Column::Count)}{header("avg", Column::Avg)}<th>"min"</th><th>"max"</th><th>"stddev"</th>
                        {header("anomalies", Column::Anomalies)}<th>"late"</th>{header("revision", Column::Revision)}</tr></thead>
                    <tbody>
                        {move || sorted(rows.clone(), sort.get().0, sort.get().1).into_iter().map(|a| view! {
                            <tr class:revised={a.revision > 0}>
                                <td>{format!("{} – {}", a.window_start.format("%H:%M"), a.window_end.format("%H:%M"))}</td>
                                <td>{a.location}</td><td>{a.sensor_type.as_str()}</td>
                                <td class="num">{a.count_readings}</td><td class="num">{format!("{:.2}", a.avg_value)}</td>
                                <td class="num">{format!("{:.2}", a.min_value)}</td><td class="num">{format!("{:.2}", a.max_value)}</td>
                                <td class="num">{format!("{:.2}", a.stddev_value)}</td><td class="num">{a.anomaly_count}</td>
                                <td class="num">{a.late_count}</td>
                                <td class="num">{if a.revision > 0 { format!("revised ×{}", a.revision) } else { "0".to_owned() }}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
}
