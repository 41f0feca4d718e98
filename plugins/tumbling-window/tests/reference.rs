//! Property test: for random streams with random disorder, lateness and batch cuts, every reading
//! lands in exactly one window or is counted beyond the horizon, and every window's final revision
//! equals a plain reference computation written here from the definitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use iotstream_plugin_sdk::SensorType;
use iotstream_plugin_sdk::aggregator::WindowAggregate;
use proptest::prelude::*;
use tumbling_window::window::{TumblingWindows, WindowConfig};

const GROUPS: [(&str, SensorType); 3] =
    [("office_1", SensorType::Co2), ("office_1", SensorType::Humidity), ("lab_1", SensorType::Co2)];

#[derive(Debug, Default, Clone)]
struct Reference {
    values: Vec<f64>,
    flagged: u32,
    late: u32,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn windows_match_the_reference(
        readings in prop::collection::vec((0_i64..600_000, -50_i64..50, 0_usize..3, any::<bool>()), 1..300),
        window_ms in prop::sample::select(vec![10_000_i64, 60_000]),
        lateness in 0_i64..30_000,
        horizon in 0_i64..200_000,
        cuts in prop::collection::vec(1_usize..40, 1..20),
    ) {
        let config = WindowConfig { window_ms, allowed_lateness_ms: lateness, revision_horizon_ms: horizon, ..WindowConfig::default() };
        // The stream: event times wander forward with disorder of up to 50 s either way.
        let stream: Vec<(i64, f64, usize, bool)> = readings
            .iter()
            .enumerate()
            .map(|(i, (jitter, v, g, f))| ((i as i64 * 1_000 + jitter - 300_000).max(0), *v as f64 * 0.5, *g, *f))
            .collect();

        // Under test, with the stream cut into batches of random sizes.
        let locations: Vec<Arc<str>> = GROUPS.iter().map(|(l, _)| Arc::from(*l)).collect();
        let mut windows = TumblingWindows::new(config);
        let mut latest: BTreeMap<(i64, usize), WindowAggregate> = BTreeMap::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < stream.len() {
            let end = (at + cut.next().copied().unwrap_or(1)).min(stream.len());
            for (ts, v, g, f) in &stream[at..end] {
                windows.add(&locations[*g], GROUPS[*g].1, *ts, *v, *f);
            }
            for a in windows.close_ready() {
                let g = GROUPS.iter().position(|(l, t)| *l == &*a.location && *t == a.sensor_type).expect("known group");
                let key = (a.window_start_ms, g);
                if let Some(previous) = latest.get(&key) {
                    prop_assert_eq!(a.revision, previous.revision + 1, "revisions count up by one");
                }
                latest.insert(key, a);
            }
            at = end;
        }

        // The reference, from the definitions, reading by reading.
        let mut reference: BTreeMap<(i64, usize), Reference> = BTreeMap::new();
        let mut max_event: Option<i64> = None;
        let mut beyond = 0_u64;
        for (ts, v, g, f) in &stream {
            let start = ts.div_euclid(window_ms) * window_ms;
            let watermark = max_event.map(|m| m - lateness);
            let late = watermark.is_some_and(|w| start + window_ms <= w);
            let too_late = watermark.is_some_and(|w| start + window_ms + horizon <= w);
            max_event = Some(max_event.map_or(*ts, |m| m.max(*ts)));
            if too_late {
                beyond += 1;
                continue;
            }
            let r = reference.entry((start, *g)).or_default();
            r.values.push(*v);
            r.flagged += u32::from(*f);
            r.late += u32::from(late);
        }
        let final_watermark = max_event.map_or(i64::MIN, |m| m - lateness);

        prop_assert_eq!(windows.late_beyond_horizon(), beyond);
        let mut accounted = beyond;
        for ((start, g), r) in &reference {
            let closed = start + window_ms <= final_watermark || r.late > 0;
            if !closed {
                prop_assert!(!latest.contains_key(&(*start, *g)), "window {start} of group {g} emitted while still open");
                accounted += r.values.len() as u64;
                continue;
            }
            let a = latest.get(&(*start, *g));
            prop_assert!(a.is_some(), "window {start} of group {g} never emitted");
            let a = a.expect("checked");
            let n = r.values.len() as f64;
            let mean = r.values.iter().sum::<f64>() / n;
            let std = (r.values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
            prop_assert_eq!(a.count as usize, r.values.len());
            prop_assert_eq!((a.anomaly_count, a.late_count), (r.flagged, r.late));
            prop_assert_eq!(a.window_end_ms, start + window_ms);
            prop_assert!((a.avg - mean).abs() < 1e-9 && (a.stddev - std).abs() < 1e-9, "{a:?} vs mean {mean} std {std}");
            prop_assert_eq!(a.min, r.values.iter().copied().fold(f64::INFINITY, f64::min));
            prop_assert_eq!(a.max, r.values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            accounted += a.count as u64;
        }
        prop_assert_eq!(latest.len(), reference.iter().filter(|((s, _), r)| s + window_ms <= final_watermark || r.late > 0).count());
        prop_assert_eq!(accounted, stream.len() as u64, "every reading in exactly one window or beyond the horizon");
    }
}
