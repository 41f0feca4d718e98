//! The online forest against hand-computed cases.

use super::*;

fn small_config() -> DetectorConfig {
    DetectorConfig {
        trees: 50,
        min_history: 1,
        min_train: 64,
        train_rows: 256,
        retrain_interval_ms: 60_000,
        // The tests below are about training and thresholds as such: fit whenever due, threshold
        // from the training rows (the bound and the validation rows have tests of their own).
        min_rows_between_fits: 1,
        validation_share: 0.0,
        // ... and within the reading that made the fit due (spreading has a test of its own).
        fit_spread_rows: 1,
        ..DetectorConfig::default()
    }
}

#[test]
fn a_due_fit_grows_over_the_next_rows_while_the_model_before_it_judges() {
    // 50 trees over 10 rows: 5 trees at each of the scope's readings from the one that made the
    // retraining due. A scope's first model is fitted at once (nothing would judge meanwhile).
    let spread = DetectorConfig { fit_spread_rows: 10, ..small_config() };
    let (mut d, mut at_once) = (OnlineForest::new(spread.clone()), OnlineForest::new(small_config()));
    let s: Arc<str> = "t".into();
    let value = |i: i64| 20.0 + (i % 7) as f64 * 0.1;
    let scope = ScopeKey::Type(SensorType::Temperature);
    let grown = |d: &OnlineForest| d.state.models[&scope].growing.as_ref().map(|g| g.growth.grown());
    for i in 0..63 {
        assert_eq!(d.observe(&s, SensorType::Temperature, i * 1000, value(i)), Judgement::WarmingUp);
        at_once.observe(&s, SensorType::Temperature, i * 1000, value(i));
    }
    // The 64th row makes the first fit due: fitted within it, either way, and it judges that row.
    assert!(matches!(d.observe(&s, SensorType::Temperature, 63_000, value(63)), Judgement::Scored { .. }));
    at_once.observe(&s, SensorType::Temperature, 63_000, value(63));
    assert_eq!(grown(&d), None);
    let first = at_once.model_for(&s, SensorType::Temperature).cloned().expect("fitted");
    assert_eq!(d.model_for(&s, SensorType::Temperature), Some(&first));
    assert_eq!((first.generation, first.training_rows, first.trained_at_ms), (1, 64, 63_000));
    for i in 64..123 {
        assert_eq!(
            d.observe(&s, SensorType::Temperature, i * 1000, value(i)),
            at_once.observe(&s, SensorType::Temperature, i * 1000, value(i))
        );
    }
    // 60 s of event time later the retraining falls due: fitted at once, or 5 trees grown while
    // generation 1 goes on judging; the 10th row grows the last 5, and the model is the one fitted
    // at once on the same rows, threshold and all.
    d.observe(&s, SensorType::Temperature, 123_000, value(123));
    at_once.observe(&s, SensorType::Temperature, 123_000, value(123));
    assert_eq!(grown(&d), Some(5));
    let second = at_once.model_for(&s, SensorType::Temperature).cloned().expect("retrained");
    assert_eq!((second.generation, second.trained_at_ms), (2, 123_000));
    let mut grown_apart = d.clone();
    for i in 124..133 {
        grown_apart.observe(&s, SensorType::Temperature, i * 1000, value(i));
        let generation = grown_apart.model_for(&s, SensorType::Temperature).map(|m| m.generation);
        assert_eq!(generation, Some(if i < 132 { 1 } else { 2 }), "row {i}");
    }
    assert_eq!(grown_apart.model_for(&s, SensorType::Temperature), Some(&second));

    // A checkpoint taken halfway, restored into a new instance, carries the growth on to the same
    // model and verdicts.
    for i in 124..128 {
        d.observe(&s, SensorType::Temperature, i * 1000, value(i));
    }
    assert_eq!(grown(&d), Some(25));
    let mut restored = OnlineForest::new(spread);
    restored.restore(postcard::from_bytes(&postcard::to_stdvec(&d.state).expect("writes")).expect("reads"));
    let judged = |d: &mut OnlineForest, i: i64| d.observe(&s, SensorType::Temperature, i * 1000, value(i));
    for i in 128..132 {
        assert_eq!(judged(&mut d, i), judged(&mut restored, i));
        let model = |d: &OnlineForest| d.model_for(&s, SensorType::Temperature).map(|m| m.generation);
        assert_eq!((model(&d), model(&restored)), (Some(1), Some(1)), "generation 1 judges while 2 grows");
    }
    assert_eq!(judged(&mut d, 132), judged(&mut restored, 132));
    assert_eq!(d.model_for(&s, SensorType::Temperature), Some(&second));
    assert_eq!(d.state, restored.state);
}

#[test]
fn per_sensor_scope_keeps_one_model_per_sensor() {
    let mut d = OnlineForest::new(DetectorConfig { model_scope: ModelScope::Sensor, ..small_config() });
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    for i in 0..64 {
        d.observe(&a, SensorType::Co2, i * 1000, 400.0 + (i % 3) as f64);
    }
    for i in 0..63 {
        d.observe(&b, SensorType::Co2, i * 1000, 800.0 + (i % 5) as f64);
    }
    // a has 64 rows of its own and a model; b, of the same type, has 63 and none yet.
    assert_eq!(d.model_for(&a, SensorType::Co2).map(|m| (m.generation, m.training_rows)), Some((1, 64)));
    assert!(d.model_for(&b, SensorType::Co2).is_none());
    // b's 64th row trains its own model, which scores that reading.
    assert!(matches!(d.observe(&b, SensorType::Co2, 99_000, 801.0), Judgement::Scored { .. }));
    assert_eq!(d.model_for(&b, SensorType::Co2).map(|m| m.training_rows), Some(64));
    let by_type = OnlineForest::new(small_config());
    assert!(by_type.model_for(&a, SensorType::Co2).is_none());
}

#[test]
fn a_new_sensor_warms_up_and_does_not_train_until_it_has_min_history() {
    let mut d = OnlineForest::new(DetectorConfig { min_history: 5, ..small_config() });
    let s: Arc<str> = "t1".into();
    // Readings 1-4 of the sensor neither train nor get judged; reading 5 + 63 more fill min_train.
    for i in 0..67 {
        assert_eq!(d.observe(&s, SensorType::Co2, i * 1000, 400.0 + (i % 3) as f64), Judgement::WarmingUp);
    }
    assert!(matches!(d.observe(&s, SensorType::Co2, 67_000, 401.0), Judgement::Scored { .. }));
    assert_eq!(d.model_for(&s, SensorType::Co2).map(|m| m.training_rows), Some(64));
}

#[test]
fn features_match_hand_computed_values() {
    let mut h = SensorHistory::default();
    features(&mut h, 3, FeatureSet::Seed, 0, 10.0);
    features(&mut h, 3, FeatureSet::Seed, 0, 20.0);
    features(&mut h, 3, FeatureSet::Seed, 0, 30.0);
    // 06:00 UTC: angle pi/2. History 20, 30, 60 (10 fell out): mean 110/3, range 40.
    let mut stationary = h.clone();
    let f = features(&mut h, 3, FeatureSet::Seed, 6 * 3_600_000, 60.0);
    // The stationary set: the same, with constant hour slots.
    let mut robust = stationary.clone();
    let g = features(&mut stationary, 3, FeatureSet::Stationary, 6 * 3_600_000, 60.0);
    assert_eq!((g[1], g[2]), (0.0, 0.0));
    assert_eq!([g[0], g[3], g[4], g[5], g[6]], [f[0], f[3], f[4], f[5], f[6]]);
    // The robust set over 20, 30, 60: median 30, deviations 10, 0, 30 so MAD 10; 60 - 30 = 30.
    assert_eq!(features(&mut robust, 3, FeatureSet::Robust, 0, 60.0), [60.0, 0.0, 0.0, 30.0, 30.0, 10.0, 30.0]);
    let mean = 110.0 / 3.0;
    let std = (((20.0 - mean) * (20.0 - mean) + (30.0 - mean) * (30.0 - mean) + (60.0 - mean) * (60.0 - mean))
        / 3.0_f64)
        .sqrt();
    assert_eq!(f[0], 60.0);
    assert!((f[1] - 1.0).abs() < 1e-12 && f[2].abs() < 1e-12);
    assert_eq!(f[3], 30.0);
    assert!((f[4] - mean).abs() < 1e-12 && (f[5] - std).abs() < 1e-12);
    assert_eq!(f[6], 40.0);
}

#[test]
fn warms_up_then_trains_then_retrains_on_event_time() {
    let mut d = OnlineForest::new(small_config());
    let s: Arc<str> = "t1".into();
    for i in 0..63 {
        assert_eq!(d.observe(&s, SensorType::Temperature, i * 1000, 20.0 + (i % 5) as f64 * 0.1), Judgement::WarmingUp);
    }
    assert!(matches!(d.observe(&s, SensorType::Temperature, 63_000, 20.2), Judgement::Scored { .. }));
    let first = d.model_for(&s, SensorType::Temperature).cloned().expect("trained");
    assert_eq!((first.generation, first.training_rows, first.trained_at_ms), (1, 64, 63_000));
    assert!(d.model_for(&s, SensorType::Humidity).is_none());
    // 59 s of event time later: not yet due; 60 s later: retrained on the newer rows.
    d.observe(&s, SensorType::Temperature, 122_999, 20.1);
    assert_eq!(d.model_for(&s, SensorType::Temperature).map(|m| m.generation), Some(1));
    d.observe(&s, SensorType::Temperature, 123_000, 20.1);
    let second = d.model_for(&s, SensorType::Temperature).expect("retrained");
    assert_eq!((second.generation, second.training_rows, second.trained_at_ms), (2, 66, 123_000));
}

#[test]
fn threshold_flags_the_contamination_share_of_training_rows_and_a_spike() {
    // One training, at the 256th reading, on exactly the 256 rows in the buffer, with the shipped
    // 100 trees. The rows take 11 values, so many score alike and a spike's margin over the
    // threshold is small: whether one forest flags it depends on its draws. So 20 forests (seeds
    // 0-19): every one keeps at most 5% of its training rows above its threshold, and at least 16
    // flag the spike (19 do; with the ChaCha12 draws the forest took before, 17 did).
    let mut flagged = Vec::new();
    for seed in 0..20 {
        let config = DetectorConfig {
            contamination: 0.05,
            min_train: 256,
            retrain_interval_ms: i64::MAX,
            trees: 100,
            seed,
            ..small_config()
        };
        let mut d = OnlineForest::new(config);
        let s: Arc<str> = "h1".into();
        for i in 0..256 {
            d.observe(&s, SensorType::Humidity, i * 1000, 45.0 + ((i * 37) % 11) as f64 * 0.2);
        }
        let model = d.model_for(&s, SensorType::Humidity).expect("trained").clone();
        // The threshold is the 95% quantile of the training scores: at most 5% of them lie above it.
        let rows: Vec<Features> =
            d.state.models[&ScopeKey::Type(SensorType::Humidity)].training.iter().copied().collect();
        let above = rows.iter().filter(|r| model.forest.score(*r) > model.threshold).count();
        assert_eq!(model.training_rows, 256);
        assert!(above <= 12, "seed {seed}: {above} of 256 above the threshold, at most 5% may be");
        let Judgement::Scored { anomaly, score } = d.observe(&s, SensorType::Humidity, 256_000, 95.0) else {
            panic!("expected a score")
        };
        if anomaly {
            flagged.push(seed);
        } else {
            eprintln!("seed {seed}: the spike scored {score}, threshold {}", model.threshold);
        }
    }
    assert!(flagged.len() >= 16, "only seeds {flagged:?} of 0-19 flag the spike");
}

#[test]
fn a_backfill_spanning_weeks_fits_a_bounded_number_of_times() {
    // 4000 readings 5 minutes apart (two weeks) in one batch, the defaults: the interval passes at
    // every reading. Rows start at the 10th reading (min_history): 3991 rows. Fits: the first at
    // 256 rows, then on doubling at 512, 1024 and 2048 (the buffer's size), then every 1024 rows
    // (min_rows_between_fits) at 3072: 5. The seed's rule fitted at every reading from the 256th.
    // Each fit is grown over the 256 rows after it fell due (the default spread), so it judges
    // from then on, but is still the model of the rows it fell due at.
    let mut d = OnlineForest::new(DetectorConfig { trees: 10, ..DetectorConfig::default() });
    let s: Arc<str> = "t".into();
    let identity = iotstream_plugin_sdk::SensorIdentity {
        sensor_id: s.clone(),
        sensor_type: SensorType::Temperature,
        location: "l".into(),
    };
    let mut catalog = iotstream_plugin_sdk::Catalog::default();
    catalog.declare(0, identity);
    let batch: iotstream_plugin_sdk::Batch =
        (0..4000).map(|i| (0, i * 300_000, 20.0 + f64::from((i * 37 % 11) as i32) * 0.1)).collect();
    let mut judged = iotstream_plugin_sdk::DetectionColumns::default();
    let readings = iotstream_plugin_sdk::ResolvedBatch::new(&catalog, &batch).expect("declared");
    d.judge_batch(readings, &mut judged).expect("judged");
    let model = d.model_for(&s, SensorType::Temperature).expect("trained");
    // Row 3072 is reading 3080 (0-based: readings 0-8 warm up, row 1 is reading 9).
    assert_eq!((model.generation, model.buffer_rows, model.trained_at_ms), (5, 2048, 3080 * 300_000));
    let generations: std::collections::BTreeSet<u32> =
        judged.models.iter().filter_map(|(_, m)| m.map(|m| m.generation)).collect();
    assert_eq!(generations.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

#[test]
fn the_threshold_is_the_budget_quantile_of_held_out_rows() {
    let config = DetectorConfig {
        contamination: 0.05,
        min_train: 256,
        train_rows: 256,
        retrain_interval_ms: i64::MAX,
        validation_share: 0.25,
        ..small_config()
    };
    let mut d = OnlineForest::new(config);
    let s: Arc<str> = "h".into();
    for i in 0..256 {
        d.observe(&s, SensorType::Humidity, i * 1000, 45.0 + ((i * 37) % 11) as f64 * 0.2);
    }
    let model = d.model_for(&s, SensorType::Humidity).expect("trained").clone();
    // Fitted on the older 192 rows; the threshold is the ceil(0.95 x 64) = 61st smallest score of
    // the newest 64.
    assert_eq!((model.training_rows, model.buffer_rows), (192, 256));
    let rows: Vec<Features> = d.state.models[&ScopeKey::Type(SensorType::Humidity)].training.iter().copied().collect();
    let mut held: Vec<f64> = rows[192..].iter().map(|r| model.forest.score(r)).collect();
    held.sort_by(f64::total_cmp);
    assert_eq!(model.threshold, held[60]);
}

#[test]
fn a_new_time_of_day_is_no_cliff_without_the_hour_features() {
    // One sensor, one reading a minute from 00:00 to 06:00 (a model per sensor, trained on those
    // hours), then the same kind of values at 18:00, an hour the model never saw.
    let run = |features| {
        let config = DetectorConfig {
            features,
            model_scope: ModelScope::Sensor,
            retrain_interval_ms: i64::MAX,
            ..DetectorConfig::default()
        };
        let mut d = OnlineForest::new(config);
        let s: Arc<str> = "t".into();
        let value = |i: i64| 21.0 + ((i * 37) % 11) as f64 * 0.05;
        for i in 0..360 {
            d.observe(&s, SensorType::Temperature, i * 60_000, value(i));
        }
        (360..420)
            .filter(|i| {
                let at = 18 * 3_600_000 + (i - 360) * 60_000;
                matches!(d.observe(&s, SensorType::Temperature, at, value(*i)), Judgement::Scored { anomaly: true, .. })
            })
            .count()
    };
    let (robust, stationary, seed) = (run(FeatureSet::Robust), run(FeatureSet::Stationary), run(FeatureSet::Seed));
    // The budget is 1%: under one reading of 60. The seed's features flag 18 of them (30%).
    assert_eq!((robust, stationary), (0, 0), "ordinary values at a new hour");
    assert!(seed > 10, "the seed's features flag the new hour: {seed} of 60");
}

#[test]
fn the_seed_preset_restores_the_seed_and_keys_override_it() {
    let parse = |json: &str| serde_json::from_str::<DetectorConfig>(json).map_err(|e| e.to_string());
    assert_eq!(parse("{}"), Ok(DetectorConfig::default()));
    let seed = parse(r#"{"preset": "seed"}"#).expect("seed");
    assert_eq!((seed.features, seed.validation_share, seed.retrain_interval_ms), (FeatureSet::Seed, 0.0, 300_000));
    assert_eq!(parse(r#"{"preset": "seed", "trees": 7}"#).map(|c| (c.trees, c.features)), Ok((7, FeatureSet::Seed)));
    assert!(parse(r#"{"hour_features": true}"#).is_err_and(|e| e.contains("unknown field")));
    // Retrainings take turns with per-type models, not with per-sensor ones, unless told.
    let turns = |json: &str| parse(json).map(|c| c.concurrent_fits);
    assert_eq!(turns("{}"), Ok(1));
    assert_eq!(turns(r#"{"model_scope": "sensor"}"#), Ok(0));
    assert_eq!(turns(r#"{"model_scope": "sensor", "concurrent_fits": 4}"#), Ok(4));
    // Trees of more rows than a forest's chunk may take are refused by name.
    let check = |json: &str| parse(json).map(|c| c.validate());
    assert_eq!(check(r#"{"max_samples": 1048576}"#), Ok(Ok(())));
    assert_eq!(
        check(r#"{"max_samples": 1048577}"#),
        Ok(Err("max_samples must be at most 1048576, got 1048577".into()))
    );
}

#[test]
fn retrainings_due_together_grow_one_at_a_time_and_stay_apart() {
    // Three types at one rate, one reading each per second, in this order: their first models come
    // at once (row 64, t = 63 s); 60 s later all three retrainings fall due together. Each grows
    // over 10 of its type's rows; the others wait, and each starts at its type's first reading
    // after the one before has finished.
    let types = [SensorType::Temperature, SensorType::Humidity, SensorType::Co2];
    let config = DetectorConfig { fit_spread_rows: 10, ..small_config() };
    let run = |config: DetectorConfig| {
        let mut d = OnlineForest::new(config);
        let sensors: Vec<Arc<str>> = ["t", "h", "c"].into_iter().map(Arc::from).collect();
        let mut most_growing = 0;
        for i in 0..230 {
            for (s, t) in sensors.iter().zip(types) {
                d.observe(s, t, i * 1000, 20.0 + ((i * 7) % 11) as f64 * 0.1);
                let growing = d.state.models.values().filter(|m| m.growing.is_some()).count();
                most_growing = most_growing.max(growing);
            }
        }
        let trained: Vec<(u32, i64)> = sensors
            .iter()
            .zip(types)
            .map(|(s, t)| d.model_for(s, t).map_or((0, 0), |m| (m.generation, m.trained_at_ms)))
            .collect();
        (most_growing, trained)
    };
    // Temperature grows over rows 123..=132 (t = 123 s to 132 s); humidity starts in round 132,
    // after it, and ends in round 141, where CO2 starts. Each retrains 60 s after its last start:
    // 183 s, 192 s and 201 s, a growth apart, so none waits again (generation 3 by t = 229 s).
    assert_eq!(run(config.clone()), (1, vec![(3, 183_000), (3, 192_000), (3, 201_000)]));
    // With no limit all three grow together, each time.
    assert_eq!(run(DetectorConfig { concurrent_fits: 0, ..config }), (3, vec![(3, 183_000); 3]));
}

#[test]
fn a_retraining_waits_for_a_slow_types_growth_no_longer_than_twice_the_interval() {
    // Pressure and temperature, one reading each per second (pressure first) until their first
    // models (t = 63 s) and both retrainings fall due at t = 123 s; pressure's grows first, over
    // 10 of its readings, but from then on pressure reads only every 30 s (t = 150, 180, ...), so
    // its growth lasts until t = 390 s. Temperature's waits, until 120 s (twice the interval)
    // after its model was trained: it starts at t = 183 s and is grown by t = 192 s.
    let config = DetectorConfig { fit_spread_rows: 10, ..small_config() };
    let mut d = OnlineForest::new(config);
    let (p, t): (Arc<str>, Arc<str>) = ("p".into(), "t".into());
    let value = |i: i64| 20.0 + ((i * 7) % 11) as f64 * 0.1;
    let trained = |d: &OnlineForest, s: &Arc<str>, ty| d.model_for(s, ty).map(|m| (m.generation, m.trained_at_ms));
    for i in 0..200 {
        if i <= 123 || i % 30 == 0 {
            d.observe(&p, SensorType::Pressure, i * 1000, value(i));
        }
        d.observe(&t, SensorType::Temperature, i * 1000, value(i));
        if i == 182 {
            assert_eq!(trained(&d, &t, SensorType::Temperature), Some((1, 63_000)), "still waiting at t = 182 s");
        }
    }
    assert_eq!(trained(&d, &t, SensorType::Temperature), Some((2, 183_000)));
    // Pressure's growth is still under way (3 of its 10 readings), generation 1 judging.
    assert_eq!(trained(&d, &p, SensorType::Pressure), Some((1, 63_000)));
    assert!(d.state.models[&ScopeKey::Type(SensorType::Pressure)].growing.is_some());
}

/// The median and MAD of `window` by selection, as the robust features were first computed.
fn selected_median_and_mad(window: &VecDeque<f64>) -> (f64, f64) {
    let mut values: Vec<f64> = window.iter().copied().collect();
    let mid = values.len() / 2;
    let median = *values.select_nth_unstable_by(mid, f64::total_cmp).1;
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    (median, *deviations.select_nth_unstable_by(mid, f64::total_cmp).1)
}

#[test]
fn the_kept_sorted_window_gives_the_selections_median_and_mad_bit_for_bit() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for capacity in [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33, 100] {
        let mut history = SensorHistory::default();
        for step in 0..3_000 {
            // Few distinct values, so the window holds ties; signed zeros and wide magnitudes too.
            let value = match rng.random_range(0..6) {
                0 => 0.0,
                1 => -0.0,
                2 => f64::from(rng.random_range(-3_i32..4)),
                3 => rng.random_range(-1e6..1e6),
                _ => rng.random_range(-1.0..1.0) * 1e-9,
            };
            if step == 1_500 {
                // A restored state carries the values alone: the sorted copy is made again.
                history = SensorHistory { values: history.values.clone(), sorted: Vec::new() };
            }
            let got = features(&mut history, capacity, FeatureSet::Robust, 0, value);
            let (median, mad) = selected_median_and_mad(&history.values);
            assert_eq!(
                (got[4].to_bits(), got[5].to_bits()),
                (median.to_bits(), mad.to_bits()),
                "capacity {capacity}, step {step}: {got:?} against {median}, {mad}"
            );
            assert_eq!(history.sorted.len(), history.values.len());
        }
    }
    assert_eq!(median_and_mad(&[]), (0.0, 0.0));
}

/// A batch judged at once (the scores of a scope's readings computed together) gives, to the bit,
/// the judgements, the models behind them and the state that judging its readings one by one
/// gives: with three types' and a dozen sensors' readings interleaved, models replaced in the
/// middle of a batch (spread growths, retrainings taking turns), sensors warming up, a spike, and
/// batches of 1 to 1,500 readings; with a model per type and a model per sensor.
#[test]
fn a_batch_judged_at_once_is_judged_as_reading_by_reading() {
    let sensors: Vec<(Arc<str>, SensorType)> = (0..12)
        .map(|i| {
            let sensor_type = [SensorType::Temperature, SensorType::Humidity, SensorType::Co2][i % 3];
            (Arc::from(format!("s{i}")), sensor_type)
        })
        .collect();
    let mut catalog = iotstream_plugin_sdk::Catalog::default();
    for (key, (sensor_id, sensor_type)) in sensors.iter().enumerate() {
        let identity = iotstream_plugin_sdk::SensorIdentity {
            sensor_id: sensor_id.clone(),
            sensor_type: *sensor_type,
            location: "l".into(),
        };
        catalog.declare(key as u32, identity);
    }
    // 6,000 readings, 200 ms apart (a retraining falls due every 5 minutes of event time); sensor
    // 11 joins late, so it warms up while the others are judged.
    let readings: Vec<(u32, i64, f64)> = (0..6000_i64)
        .map(|i| {
            let key = if i < 3000 { (i % 11) as u32 } else { (i % 12) as u32 };
            let wobble = f64::from(((i * 37) % 23) as i32) * 0.1;
            let value = if i == 4500 { 500.0 } else { 20.0 + f64::from(key) * 3.0 + wobble };
            (key, i * 200, value)
        })
        .collect();
    for model_scope in [ModelScope::SensorType, ModelScope::Sensor] {
        let config = DetectorConfig { trees: 20, min_train: 64, model_scope, ..DetectorConfig::default() };
        let (mut at_once, mut one_by_one) = (OnlineForest::new(config.clone()), OnlineForest::new(config));
        let mut models_in_a_batch = 0;
        let mut from = 0;
        for size in [1, 7, 256, 1500, 1000, 1236, 2000] {
            let batch: iotstream_plugin_sdk::Batch = readings[from..from + size].iter().copied().collect();
            from += size;
            let mut together = iotstream_plugin_sdk::DetectionColumns::default();
            let resolved = iotstream_plugin_sdk::ResolvedBatch::new(&catalog, &batch).expect("declared");
            at_once.judge_batch(resolved, &mut together).expect("judged");
            let mut apart = iotstream_plugin_sdk::DetectionColumns::default();
            for (sensor, timestamp_ms, value) in resolved.iter() {
                let judgement = one_by_one.judge(sensor, timestamp_ms, value);
                apart.push(judgement, one_by_one.model(sensor));
            }
            let bits =
                |c: &iotstream_plugin_sdk::DetectionColumns| c.scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&together), bits(&apart), "{model_scope:?}, the batch of {size}");
            assert_eq!(together, apart, "{model_scope:?}, the batch of {size}");
            assert_eq!(at_once.state(), one_by_one.state(), "{model_scope:?}, after the batch of {size}");
            let generations: std::collections::BTreeSet<u32> =
                together.models.iter().filter_map(|(_, m)| m.map(|m| m.generation)).collect();
            models_in_a_batch = models_in_a_batch.max(generations.len());
        }
        assert_eq!(from, readings.len());
        assert!(models_in_a_batch >= 2, "{model_scope:?}: no batch saw a model replaced");
    }
}
