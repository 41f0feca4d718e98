//! Analytics: history from PostgreSQL over a chosen range (last 15 min, 1 h, 24 h or custom, in
//! the URL), downsampled by the host (`/api/history`): averages per location for each sensor
//! type, statistics by location and type (pooled from the buckets), and a correlation heatmap of
//! the sensor types at one location, computed by PostgreSQL over their 1-minute windows paired by
//! start (`/api/correlations`).

use std::collections::BTreeMap;

use iotstream_api::{Correlations, History, HistoryPoint, SensorType};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::chart::Chart;
use crate::fetch::{get_json, loaded};
use crate::filters::use_filter;
use crate::options::{self, Points};
use crate::range::{RangePicker, api_range, range_of};

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

/// The location with the most readings in `history` (the first by name among equals).
fn busiest_location(history: &History) -> Option<String> {
    let mut readings: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &history.series {
        *readings.entry(s.location.as_str()).or_default() += s.points.iter().map(|p| p.count).sum::<i64>();
    }
    let most = readings.values().copied().max()?;
    readings.into_iter().find(|(_, n)| *n == most).map(|(l, _)| l.to_owned())
}

/// The heatmap's labels and matrix from the server's pairs: the sensor types present, and each
/// pair's correlation both ways round (the stage with the most windows, when several aggregate).
fn correlation_matrix(correlations: &Correlations) -> (Vec<String>, Vec<Vec<Option<f64>>>) {
    let mut windows_by_stage: BTreeMap<&str, i64> = BTreeMap::new();
    for p in &correlations.pairs {
        *windows_by_stage.entry(p.stage.as_str()).or_default() += p.windows;
    }
    let Some(stage) = windows_by_stage.iter().max_by_key(|(_, n)| **n).map(|(s, _)| *s) else {
        return (Vec::new(), Vec::new());
    };
    let pairs: Vec<_> = correlations.pairs.iter().filter(|p| p.stage == stage).collect();
    let mut types: Vec<SensorType> = pairs.iter().flat_map(|p| [p.sensor_type_a, p.sensor_type_b]).collect();
    types.sort_by_key(|t| t.as_str());
    types.dedup();
    let cell = |a: SensorType, b: SensorType| {
        pairs
            .iter()
            .find(|p| (p.sensor_type_a, p.sensor_type_b) == (a, b) || (p.sensor_type_a, p.sensor_type_b) == (b, a))
            .and_then(|p| p.correlation)
    };
    let matrix = types.iter().map(|&a| types.iter().map(|&b| cell(a, b)).collect()).collect();
    (types.iter().map(|t| t.as_str().to_owned()).collect(), matrix)
}

/// The analytics tab.
#[component]
pub fn Analytics() -> impl IntoView {
    let filter = use_filter();
    let query = use_query_map();
    let history = LocalResource::new(move || {
        let asked = range_of(&query.get())
            .map(|range| format!("/api/history?{}{}", api_range(range), filter.get().api_query()));
        async move { get_json::<History>(&asked?).await }
    });
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
    // The heatmap's location: the one filtered for, else the busiest in the range.
    let heat_location = move || {
        let h = history.get().and_then(Result::ok)?;
        filter.get().location.or_else(|| busiest_location(&h))
    };
    let correlations = LocalResource::new(move || {
        let asked = match (range_of(&query.get()), heat_location()) {
            (Ok(range), Some(location)) => Ok(Some(format!(
                "/api/correlations?{}&location={}",
                api_range(range),
                js_sys::encode_uri_component(&location)
            ))),
            (Ok(_), None) => Ok(None),
            (Err(e), _) => Err(e),
        };
        async move {
            match asked? {
                Some(url) => get_json::<Correlations>(&url).await.map(Some),
                None => Ok(None),
            }
        }
    });
    let heat = Signal::derive(move || {
        let correlations = correlations.get().and_then(Result::ok).flatten()?;
        let (names, matrix) = correlation_matrix(&correlations);
        options::heatmap(&names, &matrix)
    });
    view! {
        <RangePicker />
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
        <Chart id="correlation"
            title=Signal::derive(move || format!("Sensor-type correlation at {} (1-minute window averages)", heat_location().unwrap_or_default()))
            option=heat empty="fewer than two 1-minute windows of two sensor types here in this range" />
        {move || match correlations.get() {
            Some(Err(error)) => view! { <p class="error">{error}</p> }.into_any(),
            _ => ().into_any(),
        }}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use iotstream_api::TypeCorrelation;

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

    #[test]
    fn the_heatmap_mirrors_each_pair_and_takes_the_stage_with_most_windows() {
        let pair = |stage: &str, a, b, windows, correlation| TypeCorrelation {
            stage: stage.to_owned(),
            sensor_type_a: a,
            sensor_type_b: b,
            windows,
            correlation,
        };
        use SensorType::{Co2, Humidity};
        let correlations = Correlations {
            location: "hall".into(),
            from: DateTime::default(),
            to: DateTime::default(),
            pairs: vec![
                pair("other", Co2, Co2, 1, None),
                pair("windows", Co2, Co2, 5, Some(1.0)),
                pair("windows", Co2, Humidity, 5, Some(-0.5)),
                pair("windows", Humidity, Humidity, 5, Some(1.0)),
            ],
        };
        let (names, matrix) = correlation_matrix(&correlations);
        assert_eq!(names, ["co2", "humidity"]);
        assert_eq!(matrix, [[Some(1.0), Some(-0.5)], [Some(-0.5), Some(1.0)]]);
        assert_eq!(correlation_matrix(&Correlations { pairs: Vec::new(), ..correlations }), (Vec::new(), Vec::new()));
    }
}
