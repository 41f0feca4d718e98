//! Windowed aggregates: the 1-minute windows as trends (average with its min-max band, stddev,
//! readings and anomalies per window) and a sortable table where revised and late windows show.
//! The windows read from the API are merged with those the live stream carries as they close (or
//! are revised by late readings), so a window appears the moment it closes, without a reload.

use std::collections::BTreeMap;

use iotstream_api::{AggregateRow, SensorType};
use leptos::prelude::*;

use crate::chart::Chart;
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::filters::use_filter;
use crate::live::LiveFeed;
use crate::options::{self, Points};

/// Windows the tab reads: the API's most, about 3 hours of 5 types at 4 locations.
const WINDOWS: usize = 1000;

/// Each window once, at its newest merge: the API's rows and the live stream's may both hold a
/// window, and a revision after late readings, or another partition's partial joining the window,
/// supersedes the merge before it ([`AggregateRow::is_newer_than`]).
fn newest_revisions(rows: impl IntoIterator<Item = AggregateRow>) -> Vec<AggregateRow> {
    let mut newest: BTreeMap<(String, String, SensorType, i64), AggregateRow> = BTreeMap::new();
    for row in rows {
        let key = (row.stage.clone(), row.location.clone(), row.sensor_type, row.window_start.timestamp_millis());
        match newest.get(&key) {
            Some(kept) if !row.is_newer_than(kept) => {}
            _ => {
                newest.insert(key, row);
            }
        }
    }
    newest.into_values().collect()
}

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
    let feed = expect_context::<LiveFeed>();
    // The API's windows and those closed since (the live stream's), each at its newest revision.
    let merged = Memo::new(move |_| {
        let filter = filter.get();
        let live = feed.view.with(|v| v.aggregates.clone());
        windows.get().map(|r| {
            r.map(|rows| {
                let all = newest_revisions(rows.into_iter().chain(live));
                all.into_iter().filter(|a| filter.admits(a.sensor_type, &a.location)).collect::<Vec<_>>()
            })
        })
    });
    let rows = move || merged.get();
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn window(minute: i64, location: &str, revision: i32, count: i32) -> AggregateRow {
        let start = DateTime::<Utc>::from_timestamp(minute * 60, 0).unwrap_or_default();
        AggregateRow {
            stage: "tumbling-window".into(),
            window_start: start,
            window_end: start + chrono::TimeDelta::minutes(1),
            location: location.into(),
            sensor_type: SensorType::Co2,
            avg_value: 0.0,
            min_value: 0.0,
            max_value: 0.0,
            stddev_value: 0.0,
            count_readings: count,
            anomaly_count: 0,
            revision,
            late_count: 0,
        }
    }

    #[test]
    fn a_window_is_kept_once_at_its_newest_revision() {
        // The API read minute 1 at revision 0; the stream then carried its revision 1 and minute 2.
        let api = vec![window(0, "hall", 0, 10), window(1, "hall", 0, 10)];
        let live = vec![window(2, "hall", 0, 7), window(1, "hall", 1, 11), window(1, "lab", 0, 3)];
        let kept: Vec<_> = newest_revisions(api.into_iter().chain(live))
            .into_iter()
            .map(|a| (a.location, a.window_start.timestamp() / 60, a.revision, a.count_readings))
            .collect();
        assert_eq!(
            kept,
            [
                (String::from("hall"), 0, 0, 10),
                (String::from("hall"), 1, 1, 11),
                (String::from("hall"), 2, 0, 7),
                (String::from("lab"), 1, 0, 3)
            ]
        );
        // A stale emission arriving after its revision does not undo it.
        let kept = newest_revisions([window(1, "hall", 2, 12), window(1, "hall", 1, 11)]);
        assert_eq!(kept.iter().map(|a| a.revision).collect::<Vec<_>>(), [2]);
        // Another partition's partial joined the window (same revision, more readings), whichever
        // side read it first.
        for rows in
            [[window(1, "hall", 0, 10), window(1, "hall", 0, 25)], [window(1, "hall", 0, 25), window(1, "hall", 0, 10)]]
        {
            let kept = newest_revisions(rows);
            assert_eq!(kept.iter().map(|a| a.count_readings).collect::<Vec<_>>(), [25]);
        }
    }
}
