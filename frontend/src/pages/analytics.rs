//! Analytics: history from PostgreSQL over a chosen range (last 15 min, 1 h, 24 h or custom, in
//! the URL), downsampled by the host (`/api/history`): averages per location for each sensor
//! type, statistics by location and type (pooled from the buckets), and a correlation heatmap of
//! the sensor types at one location.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use iotstream_api::{History, HistoryPoint, SensorType};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::chart::Chart;
use crate::fetch::{get_json, loaded};
use crate::filters::use_filter;
use crate::options::{self, Points};

/// The range presets: their URL name, label and length.
const PRESETS: [(&str, &str, TimeDelta); 3] = [
    ("15m", "last 15 min", TimeDelta::minutes(15)),
    ("1h", "last hour", TimeDelta::hours(1)),
    ("24h", "last 24 h", TimeDelta::hours(24)),
];

/// `[from, to)` from the URL: a preset ending now, or `from` and `to` for a custom range (as the
/// `datetime-local` inputs give them, read as UTC).
fn range(query: &leptos_router::params::ParamsMap) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let name = query.get("range").unwrap_or_else(|| "1h".to_owned());
    if let Some((_, _, length)) = PRESETS.iter().find(|p| p.0 == name) {
        let to = Utc::now();
        return Ok((to - *length, to));
    }
    let parse = |key: &str| {
        let text = query.get(key).ok_or_else(|| format!("a custom range needs {key}"))?;
        NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M")
            .map(|t| t.and_utc())
            .map_err(|_| format!("{key} {text:?} is not a date and time"))
    };
    Ok((parse("from")?, parse("to")?))
}

/// One group's statistics over the range, pooled from its buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pooled {
    /// Readings.
    count: i64,
    /// Their mean.
    mean: f64,
    /// Their sample standard deviation, when there are two or more.
    stddev: Option<f64>,
    /// Readings a detector flagged.
    flagged: i64,
}

/// The statistics of all the readings of `points`, from each bucket's count, mean and sample
/// standard deviation: the within-bucket sums of squares plus each bucket's offset from the mean.
fn pooled(points: &[&HistoryPoint]) -> Pooled {
    let count: i64 = points.iter().map(|p| p.count).sum();
    if count == 0 {
        return Pooled::default();
    }
    let mean = points.iter().map(|p| p.avg * p.count as f64).sum::<f64>() / count as f64;
    let squares: f64 = points
        .iter()
        .map(|p| (p.count - 1) as f64 * p.stddev.unwrap_or(0.0).powi(2) + p.count as f64 * (p.avg - mean).powi(2))
        .sum();
    let stddev = (count > 1).then(|| (squares / (count - 1) as f64).sqrt());
    Pooled { count, mean, stddev, flagged: points.iter().map(|p| p.flagged).sum() }
}

/// Statistics per location and sensor type (means of different quantities are not mixed).
fn by_location(history: &History) -> Vec<(String, SensorType, Pooled)> {
    history
        .series
        .iter()
        .map(|s| (s.location.clone(), s.sensor_type, pooled(&s.points.iter().collect::<Vec<_>>())))
        .collect()
}

/// The correlation of each pair of sensor types at `location`, over the buckets both have.
fn correlations(history: &History, location: &str) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let series: Vec<_> = history.series.iter().filter(|s| s.location == location).collect();
    let names = series.iter().map(|s| s.sensor_type.as_str().to_owned()).collect();
    let by_start: Vec<BTreeMap<i64, f64>> =
        series.iter().map(|s| s.points.iter().map(|p| (p.start.timestamp_millis(), p.avg)).collect()).collect();
    let matrix = by_start
        .iter()
        .map(|a| {
            by_start
                .iter()
                .map(|b| {
                    options::pearson(&a.iter().filter_map(|(t, x)| b.get(t).map(|y| (*x, *y))).collect::<Vec<_>>())
                })
                .collect()
        })
        .collect();
    (names, matrix)
}

/// The analytics tab.
#[component]
pub fn Analytics() -> impl IntoView {
    let filter = use_filter();
    let query = use_query_map();
    let navigate = use_navigate();
    let history = LocalResource::new(move || {
        let asked = range(&query.get()).map(|(from, to)| {
            let f = filter.get();
            format!("/api/history?from={}&to={}{}", from.to_rfc3339(), to.to_rfc3339(), f.api_query())
                .replace('+', "%2B")
        });
        async move { get_json::<History>(&asked?).await }
    });
    let pick = move |name: &str, from: Option<String>, to: Option<String>| {
        let mut params = query.get_untracked();
        params.replace("range", name.to_owned());
        for (key, value) in [("from", from), ("to", to)] {
            match value {
                Some(v) => params.replace(key, v),
                None => {
                    params.remove(key);
                }
            }
        }
        navigate(&format!("/analytics{}", params.to_query_string()), NavigateOptions::default());
    };
    let (custom_from, set_custom_from) = signal(String::new());
    let (custom_to, set_custom_to) = signal(String::new());
    let chosen = move || query.get().get("range").unwrap_or_else(|| "1h".to_owned());
    let types = move || filter.get().sensor_type.map_or_else(|| SensorType::ALL.to_vec(), |t| vec![t]);
    let line = move |t: SensorType| {
        Signal::derive(move || {
            let h = history.get().and_then(Result::ok)?;
            let lines: BTreeMap<String, Points> = h
                .series
                .iter()
                .filter(|s| s.sensor_type == t)
                .map(|s| (s.location.clone(), s.points.iter().map(|p| (p.start.timestamp_millis(), p.avg)).collect()))
                .collect();
            options::time_lines(&lines, &Vec::new(), "")
        })
    };
    let heat_location = move || {
        let h = history.get().and_then(Result::ok)?;
        filter.get().location.or_else(|| h.series.first().map(|s| s.location.clone()))
    };
    let heat = Signal::derive(move || {
        let h = history.get().and_then(Result::ok)?;
        let (names, matrix) = correlations(&h, &heat_location()?);
        options::heatmap(&names, &matrix)
    });
    let pick_preset = pick.clone();
    view! {
        <div class="filters" id="range">
            {PRESETS.iter().map(|(name, label, _)| {
                let pick = pick_preset.clone();
                view! { <button class:chosen=move || chosen() == *name on:click=move |_| pick(name, None, None)>{*label}</button> }
            }).collect_view()}
            <label>"from " <input type="datetime-local" on:change=move |ev| set_custom_from.set(event_target_value(&ev)) /></label>
            <label>"to (UTC) " <input type="datetime-local" on:change=move |ev| set_custom_to.set(event_target_value(&ev)) /></label>
            <button on:click=move |_| pick("custom", Some(custom_from.get()), Some(custom_to.get()))>"apply"</button>
        </div>
        {move || loaded(history.get(), |h| view! {
            <p class="muted" id="history-summary">{format!("{} series, {} points, buckets of {:.1} s, {} to {}",
                h.series.len(), h.series.iter().map(|s| s.points.len()).sum::<usize>(), h.bucket_millis as f64 / 1000.0,
                h.from.format("%Y-%m-%d %H:%M:%S"), h.to.format("%Y-%m-%d %H:%M:%S"))}</p>
            <div class="panel">
                <h2>"Statistics by location"</h2>
                <table id="location-stats"><thead><tr><th>"location"</th><th>"type"</th><th>"readings"</th><th>"mean"</th><th>"stddev"</th><th>"anomaly rate"</th></tr></thead><tbody>
                    {by_location(&h).into_iter().map(|(l, t, p)| view! { <tr><td>{l}</td><td>{t.as_str()}</td><td class="num">{p.count}</td>
                        <td class="num">{format!("{:.2}", p.mean)}</td>
                        <td class="num">{p.stddev.map_or_else(|| "–".to_owned(), |s| format!("{s:.2}"))}</td>
                        <td class="num">{format!("{:.2} %", 100.0 * p.flagged as f64 / p.count.max(1) as f64)}</td></tr> }).collect_view()}
                </tbody></table>
            </div>
        })}
        <section class="charts">
            {move || types().into_iter().map(|t| view! {
                <Chart id=format!("history-{}", t.as_str()) title=Signal::stored(format!("{}: average per location", t.as_str())) option=line(t)
                    empty="no readings in this range" />
            }).collect_view()}
        </section>
        <Chart id="correlation" title=Signal::derive(move || format!("Sensor-type correlation at {}", heat_location().unwrap_or_default()))
            option=heat empty="no readings in this range" />
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(count: i64, avg: f64, stddev: Option<f64>, flagged: i64) -> HistoryPoint {
        HistoryPoint { start: DateTime::default(), count, avg, min: 0.0, max: 0.0, stddev, flagged, labelled: 0 }
    }

    #[test]
    fn buckets_pool_into_the_statistics_of_all_their_readings() {
        // Buckets {10, 20} (mean 15, sd sqrt(50)) and {30}: the readings 10, 20, 30 have mean 20 and
        // sample sd sqrt(((-10)^2 + 0 + 10^2) / 2) = 10.
        let (a, b) = (point(2, 15.0, Some(50f64.sqrt()), 1), point(1, 30.0, None, 0));
        let stats = pooled(&[&a, &b]);
        assert_eq!((stats.count, stats.mean, stats.flagged), (3, 20.0, 1));
        assert!((stats.stddev.unwrap_or_default() - 10.0).abs() < 1e-12, "{stats:?}");
        assert_eq!(pooled(&[&b]).stddev, None);
        assert_eq!(pooled(&[]), Pooled::default());
    }
}
