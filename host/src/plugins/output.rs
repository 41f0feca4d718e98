//! The boundary between a plugin's answers and the database: what a plugin may say that the host
//! stores or shows, checked before it goes further.
//!
//! A plugin's text and times go into columns of fixed width and range; one that does not fit fails
//! the batch's insert, every time it is retried, and so would halt the pipeline. So every answer
//! is checked here first and one that does not fit is the plugin's contract breach
//! ([`PluginError::MalformedOutput`](super::PluginError::MalformedOutput), or a refusal at load for
//! its `stage-info`), costing that plugin alone. The limits are the schema's (`migrations/`),
//! named once here. Plugin text shown to people (on `/api/plugins`, in errors) goes through
//! [`display_text`]: shortened, control characters out.

use std::collections::HashSet;

use super::bindings::{Detection, StageInfo, Verdict, WindowAggregate, columnar};

/// Characters of a plugin (stage) name: `VARCHAR(100)` of `sensor_aggregates.stage`,
/// `ml_anomaly_predictions.detector` and the checkpoints' `stage`.
pub const STAGE_NAME_MAX_CHARS: usize = 100;
/// Characters of a stage's version: `VARCHAR(50)` of `ml_anomaly_predictions.detector_version`,
/// `shadow_predictions.shadow_version` and the checkpoints' `stage_version`.
pub const VERSION_MAX_CHARS: usize = 50;
/// Characters of a window's location: `VARCHAR(100)` of `sensor_aggregates.location`.
pub const LOCATION_MAX_CHARS: usize = 100;
/// The earliest window time, ms since the Unix epoch: 0001-01-01T00:00:00Z. PostgreSQL's
/// `timestamptz` goes back to 4713 BC, but the API writes times as RFC 3339, whose years have four
/// digits: the range both hold.
pub const WINDOW_TIME_MIN_MS: i64 = -62_135_596_800_000;
/// The latest window time, ms since the Unix epoch: 9999-12-31T23:59:59.999Z (see the earliest).
pub const WINDOW_TIME_MAX_MS: i64 = 253_402_300_799_999;
/// Characters of plugin text shown on `/api/plugins` and in errors: a sentence's worth, enough to
/// say what went wrong, short enough that a plugin cannot fill the page or the log.
pub const DISPLAY_MAX_CHARS: usize = 200;
/// Characters of a host message about a plugin (an error, an event's detail): the host's sentence
/// with a path and a few plugin texts of [`DISPLAY_MAX_CHARS`] in it.
pub const DETAIL_MAX_CHARS: usize = 1000;

/// Checks a `stage-info` the host will store and show: a name and version that fit their columns
/// and hold no control character.
pub(super) fn check_info(info: &StageInfo) -> Result<(), String> {
    check_text("its name", &info.name, STAGE_NAME_MAX_CHARS)?;
    check_text("its version", &info.version, VERSION_MAX_CHARS)
}

/// Checks a plugin's (file) name, which is stored as the stage of every row it produces, or
/// another stage name (`what`: a shadow's live detector).
pub(super) fn check_name(what: &str, name: &str) -> Result<(), String> {
    check_text(what, name, STAGE_NAME_MAX_CHARS)
}

/// `text` is at most `max` characters and holds no control character (NUL among them, which
/// PostgreSQL text cannot store).
fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > max {
        return Err(format!("{what} is {chars} characters, more than the {max} the host stores"));
    }
    match text.chars().position(char::is_control) {
        Some(at) => Err(format!("{what} holds a control character at {at}")),
        None => Ok(()),
    }
}

/// Counts a detector's detections, or names the first breach: one detection per reading, every
/// score finite, every model's training time storable.
pub(super) fn check_detections(detections: &[Detection], readings: usize) -> Result<usize, String> {
    if detections.len() != readings {
        return Err(format!("{} detections for {} readings", detections.len(), readings));
    }
    if let Some(i) = detections.iter().position(|d| !d.score.is_finite()) {
        return Err(format!("score of reading {i} is not finite"));
    }
    let bad_model = detections.iter().position(|d| d.model.is_some_and(|m| !storable_time(m.trained_at_ms)));
    match bad_model {
        Some(i) => Err(format!("the model of reading {i} was trained at a time outside years 1 to 9999")),
        None => Ok(detections.len()),
    }
}

/// A columnar (0.2.0) detector's answer for a batch of `readings` as a detection per reading, or
/// the first breach of its shape: a score per reading; anomalies and readings warming up as indices
/// within the batch, each list ascending, no reading in both; model runs whose first indices ascend
/// within the batch. Scores and models are checked after, as any detector's ([`check_detections`]).
pub fn detections_of_columns(columns: columnar::Detections, readings: usize) -> Result<Vec<Detection>, String> {
    if columns.scores.len() != readings {
        return Err(format!("{} scores for {} readings", columns.scores.len(), readings));
    }
    let mut detections: Vec<Detection> =
        columns.scores.iter().map(|&score| Detection { score, verdict: Verdict::Normal, model: None }).collect();
    for (list, indices, verdict) in
        [("anomalies", &columns.anomalies, Verdict::Anomaly), ("warming-up", &columns.warming_up, Verdict::WarmingUp)]
    {
        check_ascending(list, indices.iter().copied(), readings)?;
        for &at in indices {
            let detection = &mut detections[at as usize];
            if detection.verdict != Verdict::Normal {
                return Err(format!("reading {at} is both an anomaly and warming up"));
            }
            detection.verdict = verdict;
        }
    }
    check_ascending("models", columns.models.iter().map(|run| run.first), readings)?;
    let ends = columns.models.iter().skip(1).map(|run| run.first as usize).chain([readings]);
    for (run, end) in columns.models.iter().zip(ends) {
        let Some(model) = run.model else { continue };
        for detection in &mut detections[run.first as usize..end] {
            if detection.verdict != Verdict::WarmingUp {
                detection.model = Some(model.into());
            }
        }
    }
    Ok(detections)
}

/// Every index of `list` lies within a batch of `readings` and is larger than the one before.
fn check_ascending(list: &str, indices: impl Iterator<Item = u32>, readings: usize) -> Result<(), String> {
    let mut before: Option<u32> = None;
    for (i, at) in indices.enumerate() {
        if at as usize >= readings || before.is_some_and(|b| b >= at) {
            return Err(format!("{list}[{i}] = {at} is out of order or past the batch of {readings}"));
        }
        before = Some(at);
    }
    Ok(())
}

/// Counts an aggregator's windows, or names the first that breaks the contract or would not fit
/// the database: no readings, an empty window, a non-finite statistic, a count past the column,
/// a location too long or with a control character, a time outside years 1 to 9999, or a window
/// (location, type, start, revision) given twice.
pub(super) fn check_aggregates(aggregates: &[WindowAggregate]) -> Result<usize, String> {
    let mut keys = HashSet::with_capacity(aggregates.len());
    for (i, a) in aggregates.iter().enumerate() {
        check_aggregate(a).map_err(|breach| format!("aggregate {i}: {breach}"))?;
        if !keys.insert((a.location.as_str(), a.sensor_type as u8, a.window_start_ms, a.revision)) {
            return Err(format!(
                "aggregate {i}: the same window (location, sensor type, start, revision) as an earlier one"
            ));
        }
    }
    Ok(aggregates.len())
}

fn check_aggregate(a: &WindowAggregate) -> Result<(), String> {
    if a.count == 0
        || a.window_end_ms <= a.window_start_ms
        || ![a.avg, a.min, a.max, a.stddev].iter().all(|v| v.is_finite())
    {
        return Err("no readings, an empty window or a non-finite statistic".into());
    }
    if [a.count, a.anomaly_count, a.revision, a.late_count].iter().any(|&n| i32::try_from(n).is_err()) {
        return Err(format!("a count past {}, the largest the host stores", i32::MAX));
    }
    if !storable_time(a.window_start_ms) || !storable_time(a.window_end_ms) {
        return Err("a window time outside years 1 to 9999".into());
    }
    check_text("its location", &a.location, LOCATION_MAX_CHARS)
}

fn storable_time(ms: i64) -> bool {
    (WINDOW_TIME_MIN_MS..=WINDOW_TIME_MAX_MS).contains(&ms)
}

/// Plugin text made fit to show: control characters (line breaks, escapes, NUL) replaced by
/// spaces, and cut to [`DISPLAY_MAX_CHARS`] characters with `…` when longer.
pub fn display_text(text: &str) -> String {
    fit(text, DISPLAY_MAX_CHARS)
}

/// A host message about a plugin made fit to show: as [`display_text`], cut at
/// [`DETAIL_MAX_CHARS`] (the plugin text in it was cut at [`DISPLAY_MAX_CHARS`] already).
pub fn display_detail(text: &str) -> String {
    fit(text, DETAIL_MAX_CHARS)
}

fn fit(text: &str, max: usize) -> String {
    let cleaned = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    if text.chars().count() <= max {
        return cleaned.collect();
    }
    cleaned.take(max - 1).chain(std::iter::once('…')).collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::plugins::bindings::{ModelInfo, SensorType};

    fn window(location: &str, start_ms: i64, revision: u32) -> WindowAggregate {
        WindowAggregate {
            window_start_ms: start_ms,
            window_end_ms: start_ms + 60_000,
            location: location.into(),
            sensor_type: SensorType::Co2,
            count: 3,
            avg: 1.0,
            min: 0.0,
            max: 2.0,
            stddev: 0.5,
            anomaly_count: 0,
            revision,
            late_count: 0,
        }
    }

    fn model(generation: u32) -> columnar::ModelInfo {
        columnar::ModelInfo { generation, trained_at_ms: 1_000 * i64::from(generation), training_rows: 256 }
    }

    fn columns(anomalies: &[u32], warming_up: &[u32], models: &[(u32, Option<u32>)]) -> columnar::Detections {
        columnar::Detections {
            scores: vec![0.5, 0.0, 0.9, 0.25, 0.75],
            anomalies: anomalies.to_vec(),
            warming_up: warming_up.to_vec(),
            models: models
                .iter()
                .map(|&(first, generation)| columnar::ModelRun { first, model: generation.map(model) })
                .collect(),
        }
    }

    #[test]
    fn columns_become_a_detection_per_reading_with_the_run_s_model_but_for_readings_warming_up() {
        let got = detections_of_columns(columns(&[2, 4], &[1], &[(1, Some(1)), (3, None), (4, Some(2))]), 5);
        let host = |generation: u32| Some(ModelInfo::from(model(generation)));
        let want = vec![
            Detection { score: 0.5, verdict: Verdict::Normal, model: None },
            Detection { score: 0.0, verdict: Verdict::WarmingUp, model: None },
            Detection { score: 0.9, verdict: Verdict::Anomaly, model: host(1) },
            Detection { score: 0.25, verdict: Verdict::Normal, model: None },
            Detection { score: 0.75, verdict: Verdict::Anomaly, model: host(2) },
        ];
        assert_eq!(got, Ok(want));
        assert_eq!(host(2).map(|m| (m.generation, m.trained_at_ms, m.training_rows)), Some((2, 2_000, 256)));
    }

    #[test]
    fn columns_of_the_wrong_shape_are_named() {
        let short = columnar::Detections { scores: vec![0.5], ..columns(&[], &[], &[]) };
        assert_eq!(detections_of_columns(short, 5), Err("1 scores for 5 readings".into()));
        assert_eq!(
            detections_of_columns(columns(&[4, 2], &[], &[]), 5),
            Err("anomalies[1] = 2 is out of order or past the batch of 5".into())
        );
        assert_eq!(
            detections_of_columns(columns(&[], &[5], &[]), 5),
            Err("warming-up[0] = 5 is out of order or past the batch of 5".into())
        );
        assert_eq!(
            detections_of_columns(columns(&[1, 1], &[], &[]), 5),
            Err("anomalies[1] = 1 is out of order or past the batch of 5".into())
        );
        assert_eq!(
            detections_of_columns(columns(&[3], &[3], &[]), 5),
            Err("reading 3 is both an anomaly and warming up".into())
        );
        assert_eq!(
            detections_of_columns(columns(&[], &[], &[(2, Some(1)), (2, Some(2))]), 5),
            Err("models[1] = 2 is out of order or past the batch of 5".into())
        );
        assert_eq!(
            detections_of_columns(columns(&[], &[], &[(u32::MAX, Some(1))]), 5),
            Err(format!("models[0] = {} is out of order or past the batch of 5", u32::MAX))
        );
    }

    #[test]
    fn the_time_range_is_years_1_to_9999() {
        let first = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single().expect("year 1");
        let last = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("year 9999");
        assert_eq!((WINDOW_TIME_MIN_MS, WINDOW_TIME_MAX_MS), (first.timestamp_millis(), last.timestamp_millis() + 999));
    }

    #[test]
    fn windows_that_would_not_fit_the_database_are_named() {
        let ok = window("lab_1", 0, 0);
        assert_eq!(check_aggregates(&[ok.clone(), window("lab_1", 0, 1), window("lab_2", 0, 0)]), Ok(3));
        let long = window(&"é".repeat(LOCATION_MAX_CHARS + 1), 0, 0);
        assert_eq!(
            check_aggregates(&[ok.clone(), long]),
            Err("aggregate 1: its location is 101 characters, more than the 100 the host stores".into())
        );
        assert!(check_aggregates(&[window(&"é".repeat(LOCATION_MAX_CHARS), 0, 0)]).is_ok(), "characters, not bytes");
        assert_eq!(
            check_aggregates(&[window("lab\0", 0, 0)]),
            Err("aggregate 0: its location holds a control character at 3".into())
        );
        let late = window("lab_1", WINDOW_TIME_MAX_MS - 60_000, 0);
        assert_eq!(check_aggregates(&[late]), Ok(1), "ends exactly at the last millisecond");
        assert_eq!(
            check_aggregates(&[window("lab_1", WINDOW_TIME_MAX_MS - 59_999, 0)]),
            Err("aggregate 0: a window time outside years 1 to 9999".into())
        );
        assert!(check_aggregates(&[window("lab_1", WINDOW_TIME_MIN_MS - 1, 0)]).is_err());
        assert_eq!(
            check_aggregates(&[ok.clone(), window("lab_2", 0, 0), ok.clone()]),
            Err("aggregate 2: the same window (location, sensor type, start, revision) as an earlier one".into())
        );
        let counted = WindowAggregate { late_count: 1 << 31, ..ok };
        assert_eq!(
            check_aggregates(&[counted]),
            Err("aggregate 0: a count past 2147483647, the largest the host stores".into())
        );
    }

    #[test]
    fn stage_info_must_fit_its_columns() {
        let info =
            |name: &str, version: &str| StageInfo { name: name.into(), version: version.into(), state_version: 1 };
        assert_eq!(check_info(&info("zscore", &"1".repeat(VERSION_MAX_CHARS))), Ok(()));
        assert_eq!(
            check_info(&info("zscore", &"1".repeat(VERSION_MAX_CHARS + 1))),
            Err("its version is 51 characters, more than the 50 the host stores".into())
        );
        assert_eq!(check_info(&info("z\u{1b}[31m", "0.1.0")), Err("its name holds a control character at 1".into()));
        assert_eq!(
            check_name("the plugin's file name", &"n".repeat(STAGE_NAME_MAX_CHARS + 1)),
            Err("the plugin's file name is 101 characters, more than the 100 the host stores".into())
        );
    }

    #[test]
    fn display_text_strips_control_characters_and_cuts_at_200() {
        assert_eq!(display_text("bad\nvalue\u{0}\u{1b}[2J"), "bad value  [2J");
        let long = "a".repeat(DISPLAY_MAX_CHARS + 50);
        let shown = display_text(&long);
        assert_eq!(shown.chars().count(), DISPLAY_MAX_CHARS);
        assert_eq!(shown, format!("{}…", "a".repeat(DISPLAY_MAX_CHARS - 1)));
        assert_eq!(display_text(&"b".repeat(DISPLAY_MAX_CHARS)), "b".repeat(DISPLAY_MAX_CHARS));
        assert_eq!(display_detail(&"c\n".repeat(600)).chars().count(), DETAIL_MAX_CHARS);
        assert_eq!(display_detail("c\nd"), "c d");
    }
}
