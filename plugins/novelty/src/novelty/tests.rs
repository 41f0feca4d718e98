//! The novelty detector against hand-computed cases.

use super::*;

/// 500 distinct values in [20, 21): noise with no repeated value.
fn noise(i: u32) -> f64 {
    20.0 + f64::from((i * 7919) % 1000) / 1000.0
}

fn feed(d: &mut Novelty, s: &Arc<str>, values: impl IntoIterator<Item = f64>, from_ms: i64) -> Vec<Judgement> {
    values.into_iter().enumerate().map(|(i, v)| d.observe(s, from_ms + i as i64 * 1000, v)).collect()
}

#[test]
fn warms_up_then_flags_a_spike_but_not_the_noise() {
    let mut d = Novelty::new(NoveltyConfig::default());
    let s: Arc<str> = "t".into();
    let judgements = feed(&mut d, &s, (0..500).map(noise), 0);
    assert!(judgements[..50].iter().all(|j| *j == Judgement::WarmingUp));
    assert!(judgements[50..].iter().all(|j| matches!(j, Judgement::Scored { .. })));
    // Uniform noise: a record of the residual is set within the first hundreds; later readings
    // rarely pass it by 20%.
    let late = judgements[300..].iter().filter(|j| matches!(j, Judgement::Scored { anomaly: true, .. })).count();
    assert_eq!(late, 0, "noise flagged");
    // A spike of 5 (five times the range of the noise) is far past every record.
    let Judgement::Scored { score, anomaly } = d.observe(&s, 500_000, 25.0) else { panic!("scored") };
    assert!(anomaly && score > 2.0, "spike scored {score}");
}

#[test]
fn a_shift_alarms_and_its_recovery_is_scored_but_raises_no_alarm() {
    let mut d = Novelty::new(NoveltyConfig::default());
    let s: Arc<str> = "t".into();
    feed(&mut d, &s, (0..500).map(noise), 0);
    // The level moves up by 5 for 60 readings, then back.
    let shifted = feed(&mut d, &s, (500..560).map(|i| noise(i) + 5.0), 500_000);
    assert!(matches!(shifted[0], Judgement::Scored { anomaly: true, .. }), "{:?}", shifted[0]);
    // Back: the fast forecast sits near the shifted level, so the jump scores high; but the value
    // moves towards the trend's forecast (about 45% of the way to the shifted level after 60
    // readings at alpha 0.01): a recovery.
    let Judgement::Scored { score, anomaly } = d.observe(&s, 560_000, noise(560)) else { panic!("scored") };
    assert!(!anomaly && score > 1.2, "recovery scored {score}, anomaly {anomaly}");
}

#[test]
fn a_stuck_sensor_alarms_once_when_its_run_is_rarer_than_one_in_a_million() {
    let mut d = Novelty::new(NoveltyConfig::default());
    let s: Arc<str> = "h".into();
    feed(&mut d, &s, (0..500).map(noise), 0);
    let stuck = noise(499);
    // 499 intervals, no repeat. Repeat k adds ln(1/p), p = k / (500 + k) (Laplace's rule over the
    // counts before it); the score is 1.2 x evidence / ln(1e6).
    let evidence = |k: u32| (1..=k).map(|j| (f64::from(500 + j) / f64::from(j)).ln()).sum::<f64>();
    let expected = |k: u32| 1.2 * evidence(k) / 1e6_f64.ln();
    assert!(expected(2) < 1.2 && expected(3) > 1.2);
    let judgements = feed(&mut d, &s, [stuck; 5], 500_000);
    let flags: Vec<bool> = judgements.iter().map(|j| matches!(j, Judgement::Scored { anomaly: true, .. })).collect();
    // One alarm, on the third repeat; the run adds nothing after it.
    assert_eq!(flags, [false, false, true, false, false]);
    let Judgement::Scored { score, .. } = judgements[2] else { panic!("scored") };
    assert!(score >= expected(3) - 1e-12, "{score} < {}", expected(3));
}

#[test]
fn a_counter_at_rest_does_not_alarm_for_repeating() {
    let mut d = Novelty::new(NoveltyConfig::default());
    let s: Arc<str> = "counter".into();
    // Mostly 0, a 1 every 10th reading: repeats are its normal.
    let judgements = feed(&mut d, &s, (0..1000).map(|i| if i % 10 == 9 { 1.0 } else { 0.0 }), 0);
    let flagged = judgements[200..].iter().filter(|j| matches!(j, Judgement::Scored { anomaly: true, .. })).count();
    assert_eq!(flagged, 0);
}

#[test]
fn a_changed_daily_pattern_is_caught_by_the_season_stream() {
    // 5-minute readings, 288 a day: high from 08:00 to 16:00, low otherwise, with noise; on day 6
    // the high comes 4 hours early (00:00-04:00 is high, a shape never seen at that hour) at the
    // same levels the series always has: only the season stream can tell.
    let day = |shifted: bool, d: u32| {
        (0..288).map(move |i| {
            let hour = i / 12;
            let high = if shifted { (4..12).contains(&hour) } else { (8..16).contains(&hour) };
            f64::from(u8::from(high)) * 10.0 + noise(i + 288 * d) - 20.0
        })
    };
    let run = |season_ms| {
        let mut d = Novelty::new(NoveltyConfig { season_ms, ..NoveltyConfig::default() });
        let s: Arc<str> = "occupancy".into();
        let normal: Vec<f64> = (0..5).flat_map(|d| day(false, d)).collect();
        let mut ms = 0;
        for v in normal {
            d.observe(&s, ms, v);
            ms += 300_000;
        }
        day(true, 5)
            .filter_map(|v| {
                ms += 300_000;
                match d.observe(&s, ms, v) {
                    Judgement::Scored { anomaly: true, .. } => Some(ms),
                    _ => None,
                }
            })
            .count()
    };
    assert!(run(86_400_000) > 0, "the season stream flags the early high");
    assert_eq!(run(0), 0, "without it, the same levels at another hour look normal");
}

#[test]
fn state_moves_between_instances_and_configuration_is_checked() {
    let mut a = Novelty::new(NoveltyConfig::default());
    let s: Arc<str> = "p".into();
    feed(&mut a, &s, (0..300).map(noise), 0);
    let mut b = Novelty::create(NoveltyConfig::default()).expect("valid");
    b.restore(a.state().clone());
    let next: Vec<f64> = (300..400).map(noise).chain([30.0]).collect();
    assert_eq!(feed(&mut a, &s, next.clone(), 300_000), feed(&mut b, &s, next, 300_000));
    let err = Novelty::create(NoveltyConfig { record_cap: 1.0, ..NoveltyConfig::default() }).err();
    assert_eq!(err.as_deref(), Some("record_cap must be above 1, got 1"));
    let parsed: Result<NoveltyConfig, _> = serde_json::from_str(r#"{"alpha": 0.1}"#);
    assert!(parsed.is_err_and(|e| e.to_string().contains("unknown field `alpha`")));
}

#[test]
fn the_season_stream_expects_a_blend_of_the_earlier_days() {
    // A season of 16 s at one reading a second: 16 readings, decided at the 16th (after 15
    // intervals), from which on each reading is remembered. Reading 31 meets reading 15's slot:
    // with season_memory 0.5 the slot becomes 0.5 x v15 + 0.5 x v31; with 0, v31.
    let value = |i: i64| 20.0 + (i * 7 % 5) as f64;
    for (memory, expected) in [(0.5, 0.5 * value(15) + 0.5 * value(31)), (0.0, value(31))] {
        let mut d =
            Novelty::new(NoveltyConfig { season_ms: 16_000, season_memory: memory, ..NoveltyConfig::default() });
        let s: Arc<str> = "s".into();
        for i in 0..32 {
            d.observe(&s, i * 1000, value(i));
        }
        let state = &d.sensors[&CatalogName::from(&s)];
        assert_eq!((state.period.readings, state.past.len()), (Some(16), 16));
        assert_eq!(state.past.back().copied(), Some(expected), "season_memory {memory}");
    }
}
