//! The z-score against hand-computed values.

use super::*;

fn detector(history: usize, min_history: usize) -> ZScore {
    ZScore::new(ZScoreConfig { history, min_history, ..ZScoreConfig::default() })
}

#[test]
fn scores_against_the_values_before_and_warms_up_first() {
    let mut z = detector(4, 4);
    let s: Arc<str> = "t1".into();
    for v in [10.0, 12.0, 10.0, 12.0] {
        assert_eq!(z.observe(&s, v), Judgement::WarmingUp);
    }
    // History 10, 12, 10, 12: mean 11, population std 1; |14 - 11| / 1 = 3, not above 3.
    assert_eq!(z.observe(&s, 14.0), Judgement::Scored { score: 3.0, anomaly: false });
    // History is now 12, 10, 12, 14: mean 12, variance (0+4+0+4)/4 = 2.
    let Judgement::Scored { score, anomaly } = z.observe(&s, 17.0) else { panic!("expected a score") };
    assert!((score - 5.0 / 2.0_f64.sqrt()).abs() < 1e-12);
    assert!(anomaly);
}

#[test]
fn sensors_are_independent() {
    let mut z = detector(3, 2);
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    z.observe(&a, 1.0);
    z.observe(&a, 3.0);
    assert_eq!(z.observe(&b, 100.0), Judgement::WarmingUp);
    // a: mean 2, std 1.
    assert_eq!(z.observe(&a, 5.0), Judgement::Scored { score: 3.0, anomaly: false });
}

#[test]
fn sliding_event_time_window_forgets_old_values() {
    // A tiny floor: this test is about the window, not the floor.
    let config = ZScoreConfig { min_history: 2, history_ms: Some(10_000), std_floor: 1e-9, ..ZScoreConfig::default() };
    let mut z = ZScore::new(config);
    let s: Arc<str> = "t".into();
    // 100 and 300 at 0 s and 1 s; then 10 and 12 at 20 s and 21 s: the first two are out of
    // the 10 s window by then, so 14 at 22 s is judged against 10, 12 only (mean 11, std 1).
    for (ts, v) in [(0, 100.0), (1_000, 300.0), (20_000, 10.0), (21_000, 12.0)] {
        z.observe_at(&s, ts, v);
    }
    assert_eq!(z.observe_at(&s, 22_000, 14.0), Judgement::Scored { score: 3.0, anomaly: false });
    // After a gap longer than the window, the history is empty again: warming up.
    assert_eq!(z.observe_at(&s, 60_000, 14.0), Judgement::WarmingUp);
    let err = ZScore::create(ZScoreConfig { history_ms: Some(0), ..ZScoreConfig::default() }).err();
    assert_eq!(err.as_deref(), Some("history_ms must be positive, got Some(0)"));
}

#[test]
fn a_flat_history_is_judged_against_the_signal_scale() {
    let mut z = detector(10, 5);
    let s: Arc<str> = "at_rest".into();
    // The sensor once moved between 10 and 30, then rests at 20 for ten readings.
    for v in [10.0, 30.0].into_iter().chain(std::iter::repeat_n(20.0, 10)) {
        z.observe(&s, v);
    }
    assert_eq!(z.observe(&s, 20.0), Judgement::Scored { score: 0.0, anomaly: false });
    // Range 20: the floor is 1% of 20 = 0.2; a 0.4 step scores 2 (the seed: 2e11).
    let Judgement::Scored { score, anomaly } = z.observe(&s, 20.4) else { panic!("expected a score") };
    assert!((score - 2.0).abs() < 1e-9 && !anomaly, "score {score}");
    // History 9 x 20 and 20.4: mean 20.04, std 0.12, floored at 0.2: 0.96 / 0.2 = 4.8.
    let Judgement::Scored { score, anomaly } = z.observe(&s, 21.0) else { panic!("expected a score") };
    assert!((score - 4.8).abs() < 1e-9 && anomaly, "score {score}");
    // A signal that never moved keeps the 1e-12 floor: its first move is news.
    let fresh: Arc<str> = "never_moved".into();
    for _ in 0..10 {
        z.observe(&fresh, 0.0);
    }
    assert_eq!(z.observe(&fresh, 0.5), Judgement::Scored { score: 0.5e12, anomaly: true });
}

#[test]
fn a_square_wave_flips_are_scored_by_its_range_not_infinity() {
    // 0 for 20 readings, 10 for 20, then 0 again: the history before the flip back is all 10s.
    let mut z = detector(20, 10);
    let s: Arc<str> = "square".into();
    for v in std::iter::repeat_n(0.0, 20).chain(std::iter::repeat_n(10.0, 20)) {
        z.observe(&s, v);
    }
    // Range 10: floor 0.1; a change of 10 scores 100, finite and proportional.
    assert_eq!(z.observe(&s, 0.0), Judgement::Scored { score: 100.0, anomaly: true });
    // The seed preset divides by 1e-12 of the scale: 1e12.
    let mut seed = ZScore::create(
        serde_json::from_str(r#"{"preset": "seed", "history": 20, "min_history": 10}"#).expect("config"),
    )
    .expect("valid");
    for v in std::iter::repeat_n(0.0, 20).chain(std::iter::repeat_n(10.0, 20)) {
        seed.observe(&s, v);
    }
    let Judgement::Scored { score, .. } = seed.observe(&s, 0.0) else { panic!("expected a score") };
    assert!((score - 1e12).abs() < 1.0, "seed score {score}");
}

#[test]
fn presets_set_defaults_that_keys_override_and_unknown_keys_are_refused() {
    let parse = |json: &str| serde_json::from_str::<ZScoreConfig>(json).map_err(|e| e.to_string());
    assert_eq!(parse("{}"), Ok(ZScoreConfig::default()));
    assert_eq!(parse(r#"{"preset": "seed"}"#).map(|c| c.std_floor), Ok(1e-12));
    assert_eq!(parse(r#"{"preset": "seed", "std_floor": 0.5}"#).map(|c| c.std_floor), Ok(0.5));
    assert!(parse(r#"{"floor": 1}"#).is_err_and(|e| e.contains("unknown field `floor`")));
    let err = ZScore::create(ZScoreConfig { std_floor: 0.0, ..ZScoreConfig::default() }).err();
    assert_eq!(err.as_deref(), Some("std_floor must be in (0, 1), got 0"));
}

#[test]
fn rolling_statistics_stay_exact_far_from_zero() {
    // Values near 1e9 with unit spread: a naive sum of squares loses every digit here.
    let mut z = detector(100, 30);
    let s: Arc<str> = "p".into();
    let values: Vec<f64> = (0..1000).map(|i| 1e9 + f64::from(i % 7)).collect();
    for v in &values {
        z.observe(&s, *v);
    }
    let window = &values[values.len() - 100..];
    let mean = window.iter().sum::<f64>() / 100.0;
    let std = (window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 100.0).sqrt();
    let Judgement::Scored { score, .. } = z.observe(&s, 1e9 + 10.0) else { panic!("expected a score") };
    let expected = (1e9 + 10.0 - mean).abs() / std;
    assert!((score - expected).abs() < 1e-6 * expected, "{score} vs {expected}");
}
