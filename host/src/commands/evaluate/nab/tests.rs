//! The scorer against a case computed by hand.

use super::*;

const STANDARD: Costs = Costs { tp: 1.0, fp: 0.11, fn_: 1.0 };

/// 10 rows, one window over rows 4-7 (width 4); probation 15% of 10 = 1 row. Detections (scores)
/// at row 0 (0.9, in probation), row 2 (0.8, before the window), row 5 (0.7, in it) and row 9
/// (0.6, after it); the other rows score 0.
fn case() -> Scored {
    let mut scores = vec![0.0; 10];
    (scores[0], scores[2], scores[5], scores[9]) = (0.9, 0.8, 0.7, 0.6);
    Scored { flags: scores.iter().map(|s| *s >= 0.7).collect(), scores, windows: vec![(4, 7)] }
}

#[test]
fn a_small_series_scores_as_computed_by_hand() {
    let series = case();
    // Row 5 in window 4-7: position -(7 - 5 + 1) / 4 = -0.75; reward 2 / (1 + e^-3.75) - 1.
    let tp = 2.0 / (1.0 + (-3.75_f64).exp()) - 1.0;
    assert!((tp - 0.954_045).abs() < 1e-6);
    // Row 9 after it: position |7 - 9| / (4 - 1) = 2/3; cost 0.11 x (2 / (1 + e^(10/3)) - 1).
    let late = 0.11 * (2.0 / (1.0 + (10.0_f64 / 3.0).exp()) - 1.0);
    // Thresholds, highest first: 0.9 is in probation (no change from the null total, -1); 0.8 adds
    // the row-2 false positive (-1.11); 0.7 detects the window (tp - 0.11); 0.6 adds `late`; 0 adds
    // rows 1, 3 (full cost, before the window), 4, 6, 7 (later in the window: no gain) and 8.
    let at = [(0.8, -1.0 - 0.11), (0.7, tp - 0.11), (0.6, tp - 0.11 + late)];
    for (threshold, raw) in at {
        assert!((score_at(&[&series], STANDARD, threshold).raw - raw).abs() < 1e-12, "at {threshold}");
    }
    let best = score_corpus(&[&series], STANDARD);
    assert_eq!(best.threshold, 0.7);
    assert!((best.raw - (tp - 0.11)).abs() < 1e-12);
    // Normalised between null (-1) and perfect (2 / (1 + e^-5) - 1, a detection on row 4).
    let perfect = 2.0 / (1.0 + (-5.0_f64).exp()) - 1.0;
    let expected = 100.0 * (tp - 0.11 + 1.0) / (perfect + 1.0);
    assert!((best.normalised - expected).abs() < 1e-9, "{}", best.normalised);
    assert!((best.normalised - 92.8235).abs() < 1e-3);
}

#[test]
fn a_corpus_has_one_threshold_and_misses_cost_fn_weight() {
    // Two series: the hand case, and one with a window its detector never reaches (all 0).
    let other = Scored { scores: vec![0.0; 10], flags: vec![false; 10], windows: vec![(6, 8)] };
    let low_fn = Costs { tp: 1.0, fp: 0.11, fn_: 2.0 };
    let tp = 2.0 / (1.0 + (-3.75_f64).exp()) - 1.0;
    // At 0.7 the first window is detected (tp - 0.11), the second missed (-2): tp - 2.11.
    assert!((score_at(&[&case(), &other], low_fn, 0.7).raw - (tp - 2.11)).abs() < 1e-12);
    // At 0 every row after probation is a detection: each window is caught on its first row
    // (position -1), rows before a window cost 0.11 each (rows 1-3 and 1-5), rows after one cost
    // 0.11 x sigma(distance / (width - 1)): rows 8 and 9 of the first (1/3, 2/3), row 9 of the
    // second (1/2).
    let sigma = |y: f64| 2.0 / (1.0 + (5.0 * y).exp()) - 1.0;
    let expected = 2.0 * sigma(-1.0) - 0.11 * 8.0 + 0.11 * (sigma(1.0 / 3.0) + sigma(2.0 / 3.0) + sigma(0.5));
    assert!((score_at(&[&case(), &other], low_fn, 0.0).raw - expected).abs() < 1e-12);
    // One threshold for the corpus: 0, although the first series alone is best at 0.7.
    let corpus = score_corpus(&[&case(), &other], low_fn);
    assert_eq!(corpus.threshold, 0.0);
    assert!((corpus.raw - expected).abs() < 1e-12);
    let null = score_at(&[&case(), &other], low_fn, f64::INFINITY);
    assert_eq!((null.raw, null.normalised), (-4.0, 0.0));
}

#[test]
fn probation_is_fifteen_percent_up_to_750_rows_and_events_count_runs() {
    assert_eq!((probation(10), probation(4032), probation(22_695)), (1, 604, 750));
    assert_eq!(runs(&[true, true, false, true, false, true, true], 1), vec![(1, 1), (3, 3), (5, 6)]);
    let events = Events::count(&case().flags, &case().windows, 1);
    // Flags at 2 and 5 (0 is in probation): two alarms, one inside the window.
    assert_eq!(events, Events { windows: 1, detected: 1, alarms: 2, true_alarms: 1 });
    assert_eq!((events.precision(), events.recall()), (0.5, 1.0));
}
