//! ML anomaly detection: each detector's score over time and its distribution, quality against
//! the simulator's labels (precision, recall, F1), how often detectors agree (the seed's
//! "detection method agreement": the 2×2 confusion of two detectors' verdicts on the same
//! readings, counted by PostgreSQL), the models the detectors trained (generation, training rows,
//! retrain times), and shadows beside their live detectors. Quality, agreement and models cover
//! the range picked (in the URL, as on the analytics tab).

use std::collections::BTreeMap;

use iotstream_api::{DetectorAgreement, ModelGeneration, PredictionRow, QualityReport, ShadowComparison, Verdict};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::chart::Chart;
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::filters::use_filter;
use crate::options::{self, Points};
use crate::range::{RangePicker, api_range, range_of};

/// Verdicts the charts read: the API's most; at the simulator's rate, the last few seconds of
/// every detector.
const VERDICTS: usize = 1000;
/// Bins of the score histograms: enough to see two modes, few enough to stay readable on a phone.
const BINS: usize = 20;
/// Models listed in the table (the newest trained first); the chart draws all.
const GENERATION_ROWS: usize = 40;

/// Two detectors' verdicts on the readings both judged, summed over sensor types: the 2×2
/// confusion (`[[both anomalous, only a], [only b, both normal]]`) and their agreement.
#[derive(Debug, Clone, Default, PartialEq)]
struct Confusion {
    /// One detector (rows).
    detector_a: String,
    /// The other (columns).
    detector_b: String,
    /// Both anomalous, only `a` anomalous, only `b` anomalous, both normal.
    cells: [i64; 4],
}

impl Confusion {
    /// Readings both judged.
    fn judged(&self) -> i64 {
        self.cells.iter().sum()
    }

    /// The share of readings with the same verdict, when any were judged by both.
    fn agreement(&self) -> Option<f64> {
        let judged = self.judged();
        (judged > 0).then(|| (self.cells[0] + self.cells[3]) as f64 / judged as f64)
    }
}

/// One confusion per pair of detectors, over the sensor types given.
fn confusions<'a>(agreement: impl IntoIterator<Item = &'a DetectorAgreement>) -> Vec<Confusion> {
    let mut pairs: BTreeMap<(String, String), [i64; 4]> = BTreeMap::new();
    for a in agreement {
        let cells = pairs.entry((a.detector_a.clone(), a.detector_b.clone())).or_default();
        let counts = [a.both_anomalous, a.only_a_anomalous, a.only_b_anomalous, a.both_normal()];
        for (cell, n) in cells.iter_mut().zip(counts) {
            *cell += n;
        }
    }
    pairs.into_iter().map(|((detector_a, detector_b), cells)| Confusion { detector_a, detector_b, cells }).collect()
}

/// A confusion as a 2×2 table, with its agreement rate.
fn confusion_table(c: Confusion) -> impl IntoView {
    let id = format!("confusion-{}-{}", c.detector_a, c.detector_b);
    let caption =
        format!("{} vs {}: {} readings, agreement {}", c.detector_a, c.detector_b, c.judged(), percent(c.agreement()));
    let [both, only_a, only_b, neither] = c.cells;
    view! {
        <table class="confusion" id=id>
            <caption>{caption}</caption>
            <thead><tr><th></th><th>{format!("{} anomaly", c.detector_b)}</th><th>{format!("{} normal", c.detector_b)}</th></tr></thead>
            <tbody>
                <tr><th>{format!("{} anomaly", c.detector_a)}</th><td class="num agree">{both}</td><td class="num">{only_a}</td></tr>
                <tr><th>{format!("{} normal", c.detector_a)}</th><td class="num">{only_b}</td><td class="num agree">{neither}</td></tr>
            </tbody>
        </table>
    }
}

/// Retrains over time: each lane's generations of a detector and sensor type as a step line at
/// their training times, the lanes of one detector and type under one name (each lane counts its
/// own generations, so their numbers are not joined into one line).
fn retrains(models: &[ModelGeneration]) -> Option<serde_json::Value> {
    let one_source = models.windows(2).all(|w| w[0].source_id == w[1].source_id);
    let mut groups: BTreeMap<String, BTreeMap<String, Points>> = BTreeMap::new();
    for m in models {
        if let Some(trained_at) = m.trained_at {
            groups
                .entry(format!("{} {}", m.detector, m.sensor_type.as_str()))
                .or_default()
                .entry(lane_name(m, one_source))
                .or_default()
                .push((trained_at.timestamp_millis(), f64::from(m.generation)));
        }
    }
    groups
        .values_mut()
        .flat_map(BTreeMap::values_mut)
        .for_each(|l| l.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))));
    options::grouped_steps(&groups, "generation")
}

/// The lane that trained a model, as the dashboard names it: its partition, and its source where
/// the range holds models of more than one (a topic re-created, another cluster).
fn lane_name(m: &ModelGeneration, one_source: bool) -> String {
    if one_source {
        format!("partition {}", m.partition)
    } else {
        format!("source {} partition {}", m.source_id, m.partition)
    }
}

/// A rate as a percentage, or a dash when undefined.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

/// The ML tab.
#[component]
pub fn Ml() -> impl IntoView {
    let filter = use_filter();
    let tick = refresh_tick();
    let verdicts = LocalResource::new(move || {
        tick.track();
        let url = format!("/api/predictions?limit={VERDICTS}");
        async move { get_json::<Vec<PredictionRow>>(&url).await }
    });
    let query = use_query_map();
    // Quality, agreement and models over the range picked; presets slide with the refresh tick.
    let ranged = move |path: &'static str| {
        tick.track();
        range_of(&query.get()).map(|range| format!("{path}?{}", api_range(range)))
    };
    let quality = LocalResource::new(move || {
        let url = ranged("/api/quality");
        async move { get_json::<QualityReport>(&url?).await }
    });
    let models = LocalResource::new(move || {
        let url = ranged("/api/models");
        async move { get_json::<Vec<ModelGeneration>>(&url?).await }
    });
    let shadows = LocalResource::new(move || {
        tick.track();
        get_json::<Vec<ShadowComparison>>("/api/shadows")
    });
    let judged = move || {
        let filter = filter.get();
        let rows = verdicts.get().and_then(Result::ok).unwrap_or_default();
        rows.into_iter()
            .filter(|p| p.verdict != Verdict::WarmingUp && filter.sensor_type.is_none_or(|t| t == p.sensor_type))
            .collect::<Vec<_>>()
    };
    let scores = Signal::derive(move || {
        let mut lines: BTreeMap<String, Points> = BTreeMap::new();
        let mut marks = Vec::new();
        for p in judged() {
            let point = (p.timestamp.timestamp_millis(), p.anomaly_score);
            if p.is_anomaly {
                marks.push(point);
            }
            lines.entry(p.detector).or_default().push(point);
        }
        lines.values_mut().for_each(|l| l.sort_by_key(|p| p.0));
        options::time_lines(&lines, &marks, "score")
    });
    let distributions = Signal::derive(move || {
        let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for p in judged() {
            values.entry(p.detector).or_default().push(p.anomaly_score);
        }
        options::histograms(&values, BINS)
    });
    let models_shown = move || {
        let f = filter.get();
        models.get().map(|r| {
            r.map(|m| m.into_iter().filter(|m| f.sensor_type.is_none_or(|t| t == m.sensor_type)).collect::<Vec<_>>())
        })
    };
    let retrain_chart = Signal::derive(move || retrains(&models_shown().and_then(Result::ok).unwrap_or_default()));
    view! {
        <RangePicker />
        <section class="grid">
            <Chart id="ml-scores" title=Signal::stored("Score over time, newest verdicts (anomalies in red)".to_owned()) option=scores />
            <Chart id="ml-histograms" title=Signal::stored("Score distribution per detector".to_owned()) option=distributions />
        </section>
        <div class="panel">
            <h2>"Quality against the simulator's labels (range picked)"</h2>
            {move || loaded(quality.get(), move |q| {
                let f = filter.get();
                let detectors: Vec<_> = q.detectors.into_iter().filter(|d| f.sensor_type.is_none_or(|t| t == d.sensor_type)).collect();
                let agreement: Vec<_> = q.agreement.into_iter().filter(|d| f.sensor_type.is_none_or(|t| t == d.sensor_type)).collect();
                if detectors.is_empty() { return view! { <p class="empty">"no judged verdicts yet"</p> }.into_any() }
                view! {
                    <table id="quality"><thead><tr><th>"detector"</th><th>"type"</th><th>"judged"</th><th>"precision"</th><th>"recall"</th><th>"F1"</th><th>"alarms/h"</th></tr></thead><tbody>
                        {detectors.into_iter().map(|d| view! { <tr><td>{d.detector}</td><td>{d.sensor_type.as_str()}</td><td class="num">{d.judged}</td>
                            <td class="num">{percent(d.precision)}</td><td class="num">{percent(d.recall)}</td><td class="num">{percent(d.f1)}</td>
                            <td class="num">{d.alarms_per_hour.map_or_else(|| "–".to_owned(), |a| format!("{a:.1}"))}</td></tr> }).collect_view()}
                    </tbody></table>
                    <h2>"Detection method agreement (verdicts on the same readings)"</h2>
                    <div class="confusions">{confusions(&agreement).into_iter().map(confusion_table).collect_view()}</div>
                    <table id="agreement"><thead><tr><th>"detectors"</th><th>"type"</th><th>"both anomaly"</th><th>"only first"</th><th>"only second"</th><th>"both normal"</th><th>"agreement"</th></tr></thead><tbody>
                        {agreement.into_iter().map(|a| view! { <tr><td>{format!("{} vs {}", a.detector_a, a.detector_b)}</td><td>{a.sensor_type.as_str()}</td>
                            <td class="num">{a.both_anomalous}</td><td class="num">{a.only_a_anomalous}</td><td class="num">{a.only_b_anomalous}</td>
                            <td class="num">{a.both_normal()}</td><td class="num">{percent(a.agreement)}</td></tr> }).collect_view()}
                    </tbody></table>
                }.into_any()
            })}
        </div>
        <section class="grid">
            <div class="panel">
                <h2>"Models trained (newest first; each partition's lane trains its own)"</h2>
                {move || loaded(models_shown(), |rows| if rows.is_empty() {
                    view! { <p class="empty">"no detector trained a model in this range"</p> }.into_any()
                } else {
                    let more = rows.len().saturating_sub(GENERATION_ROWS);
                    view! {
                        <table id="models"><thead><tr><th>"detector"</th><th>"type"</th><th>"partition"</th><th>"generation"</th><th>"version"</th>
                            <th>"trained at"</th><th>"training rows"</th><th>"verdicts"</th><th>"anomalies"</th><th>"judged"</th></tr></thead><tbody>
                            {rows.into_iter().take(GENERATION_ROWS).map(|m| view! { <tr><td>{m.detector}</td><td>{m.sensor_type.as_str()}</td>
                                <td class="num">{m.partition}</td><td class="num">{m.generation}</td><td>{m.detector_version}</td>
                                <td>{m.trained_at.map_or_else(|| "–".to_owned(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())}</td>
                                <td class="num">{m.training_rows.map_or_else(|| "–".to_owned(), |n| n.to_string())}</td>
                                <td class="num">{m.verdicts}</td><td class="num">{m.anomalies}</td>
                                <td>{format!("{} – {}", m.first_verdict.format("%H:%M:%S"), m.last_verdict.format("%H:%M:%S"))}</td></tr> }).collect_view()}
                        </tbody></table>
                        {(more > 0).then(|| view! { <p class="muted">{format!("{more} older models not listed")}</p> })}
                    }.into_any()
                })}
            </div>
            <Chart id="ml-retrains" title=Signal::stored("Retrains: model generation at its training time".to_owned())
                option=retrain_chart empty="no retrain in this range" />
            <div class="panel">
                <h2>"Shadows beside their live detectors"</h2>
                {move || loaded(shadows.get(), |rows| if rows.is_empty() {
                    view! { <p class="empty">"no shadow detector running"</p> }.into_any()
                } else {
                    view! { <table id="shadows"><thead><tr><th>"shadow"</th><th>"live"</th><th>"judged"</th><th>"agreement"</th><th>"anomalies shadow / live"</th></tr></thead><tbody>
                        {rows.into_iter().map(|s| view! { <tr><td>{format!("{} {}", s.shadow, s.shadow_version)}</td><td>{s.live_detector}</td>
                            <td class="num">{s.judged_by_both}</td><td class="num">{percent(s.agreement)}</td>
                            <td class="num">{format!("{} / {}", s.shadow_anomalies, s.live_anomalies)}</td></tr> }).collect_view()}
                    </tbody></table> }.into_any()
                })}
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_api::SensorType;

    fn pair(sensor_type: SensorType, cells: [i64; 4]) -> DetectorAgreement {
        DetectorAgreement {
            sensor_type,
            detector_a: "isolation-forest".into(),
            detector_b: "zscore".into(),
            judged_by_both: cells.iter().sum(),
            agreed: cells[0] + cells[3],
            both_anomalous: cells[0],
            only_a_anomalous: cells[1],
            only_b_anomalous: cells[2],
            agreement: None,
        }
    }

    #[test]
    fn confusions_sum_the_four_cells_over_sensor_types() {
        let rows = [pair(SensorType::Co2, [2, 2, 2, 4]), pair(SensorType::Humidity, [1, 0, 3, 16])];
        let all = confusions(&rows);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].cells, [3, 2, 5, 20]);
        assert_eq!(all[0].judged(), 30);
        // (3 + 20) of 30 agree.
        assert_eq!(all[0].agreement(), Some(23.0 / 30.0));
        assert_eq!(Confusion::default().agreement(), None);
    }
}
