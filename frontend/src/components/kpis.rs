//! The KPI cards: totals and rates of the whole pipeline.

use iotstream_api::Stats;
use leptos::prelude::*;

/// One card: a big number and its label.
#[component]
fn Card(
    /// The element id, for tests and deep links.
    id: &'static str,
    /// What the number is.
    label: &'static str,
    /// The number, formatted.
    value: Signal<String>,
) -> impl IntoView {
    view! {
        <div class="card">
            <div class="value" id=id>{value}</div>
            <div class="label">{label}</div>
        </div>
    }
}

/// The consumer lag as a card shows it: a dash until librdkafka has reported it.
fn lag(stats: &Stats) -> String {
    stats.consumer_lag.map_or_else(|| "–".to_owned(), |lag| lag.to_string())
}

/// Readings, anomalies, active sensors, rate, latency, consumer lag and dead letters.
#[component]
pub fn Kpis(
    /// The current stats.
    stats: Signal<Stats>,
) -> impl IntoView {
    let field = move |f: fn(&Stats) -> String| Signal::derive(move || f(&stats.get()));
    view! {
        <section class="kpis">
            <Card id="kpi-readings" label="readings" value=field(|s| s.readings_total.to_string()) />
            <Card id="kpi-anomalies" label="anomalies" value=field(|s| s.anomalies_total.to_string()) />
            <Card id="kpi-sensors" label="active sensors" value=field(|s| s.active_sensors.to_string()) />
            <Card id="kpi-rate" label="readings/s" value=field(|s| format!("{:.0}", s.readings_per_second)) />
            <Card id="kpi-latency" label="latency p50 / p99 (ms)" value=field(|s| format!("{:.0} / {:.0}", s.latency_ms_p50, s.latency_ms_p99)) />
            <Card id="kpi-lag" label="consumer lag (messages)" value=field(lag) />
            <Card id="kpi-windows" label="windows" value=field(|s| s.aggregates_total.to_string()) />
            <Card id="kpi-dead-letters" label="dead letters" value=field(|s| s.dead_letters_total.to_string()) />
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_lag_is_a_dash_not_zero() {
        assert_eq!(lag(&Stats::default()), "–");
        assert_eq!(lag(&Stats { consumer_lag: Some(0), ..Stats::default() }), "0");
        assert_eq!(lag(&Stats { consumer_lag: Some(1234), ..Stats::default() }), "1234");
    }
}
