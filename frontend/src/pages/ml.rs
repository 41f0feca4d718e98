//! ML anomaly detection: each detector's score over time and its distribution, quality against
//! the simulator's labels (precision, recall, F1), how often detectors agree (the seed's
//! "detection method agreement", as a confusion of verdicts), the model generations in use, and
//! shadows beside their live detectors.

use std::collections::BTreeMap;

use iotstream_api::{PredictionRow, QualityReport, ShadowComparison, Verdict};
use leptos::prelude::*;

use crate::chart::Chart;
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::filters::use_filter;
use crate::options::{self, Points};

/// Verdicts the charts read: the API's most; at the simulator's rate, the last few seconds of
/// every detector.
const VERDICTS: usize = 1000;
/// Bins of the score histograms: enough to see two modes, few enough to stay readable on a phone.
const BINS: usize = 20;

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
    let quality = LocalResource::new(move || {
        tick.track();
        get_json::<QualityReport>("/api/quality")
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
    let generations = move || {
        let mut newest: BTreeMap<String, (String, Option<i32>)> = BTreeMap::new();
        for p in verdicts.get().and_then(Result::ok).unwrap_or_default() {
            newest.entry(p.detector).or_insert((p.detector_version, p.model_generation));
        }
        newest
    };
    view! {
        <section class="grid">
            <Chart id="ml-scores" title=Signal::stored("Score over time (anomalies in red)".to_owned()) option=scores />
            <Chart id="ml-histograms" title=Signal::stored("Score distribution per detector".to_owned()) option=distributions />
        </section>
        <div class="panel">
            <h2>"Quality against the simulator's labels"</h2>
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
                    <h2>"Detection method agreement"</h2>
                    <table id="agreement"><thead><tr><th>"detectors"</th><th>"type"</th><th>"both anomaly"</th><th>"both normal"</th><th>"disagree"</th><th>"agreement"</th></tr></thead><tbody>
                        {agreement.into_iter().map(|a| view! { <tr><td>{format!("{} vs {}", a.detector_a, a.detector_b)}</td><td>{a.sensor_type.as_str()}</td>
                            <td class="num">{a.both_anomalous}</td><td class="num">{a.agreed - a.both_anomalous}</td>
                            <td class="num">{a.judged_by_both - a.agreed}</td><td class="num">{percent(a.agreement)}</td></tr> }).collect_view()}
                    </tbody></table>
                }.into_any()
            })}
        </div>
        <section class="grid">
            <div class="panel">
                <h2>"Models in use"</h2>
                <table id="models"><thead><tr><th>"detector"</th><th>"version"</th><th>"model generation"</th></tr></thead><tbody>
                    {move || generations().into_iter().map(|(d, (v, g))| view! { <tr><td>{d}</td><td>{v}</td>
                        <td class="num">{g.map_or_else(|| "–".to_owned(), |g| g.to_string())}</td></tr> }).collect_view()}
                </tbody></table>
            </div>
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
