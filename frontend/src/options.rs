//! ECharts options built from the dashboard's data: pure functions from rows to JSON, so what a
//! chart shows is decided in Rust, next to the data, and tested natively.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A series of `(milliseconds since the epoch, value)` points.
pub type Points = Vec<(i64, f64)>;

/// Points up to which a line also shows a dot at each point: a line of one point (a window that
/// just closed) is otherwise invisible, and dots on a dense line only hide it.
const DOTS_UP_TO: usize = 60;

/// The options every chart shares: no entry animation (charts redraw on every batch), a
/// transparent background under the page's theme, room for the legend's row and, below it, the
/// y-axis name (a unit, or "generation"), which ECharts sets 15 px above the plot.
fn base() -> Value {
    json!({
        "animation": false,
        "backgroundColor": "transparent",
        "grid": { "left": 50, "right": 20, "top": 56, "bottom": 30, "containLabel": true },
        "tooltip": { "trigger": "axis" },
        "legend": { "type": "scroll", "top": 0 },
    })
}

/// Lines over time, one per name, with `marks` (anomalies) as red dots on top.
pub fn time_lines(lines: &BTreeMap<String, Points>, marks: &Points, unit: &str) -> Option<Value> {
    if lines.values().all(Vec::is_empty) {
        return None;
    }
    let mut series: Vec<Value> = lines
        .iter()
        .map(|(name, points)| json!({ "name": name, "type": "line", "showSymbol": points.len() <= DOTS_UP_TO, "data": points }))
        .collect();
    if !marks.is_empty() {
        series.push(json!({
            "name": "anomaly", "type": "scatter", "symbolSize": 9, "z": 10,
            "itemStyle": { "color": "#ff4d4f" }, "data": marks,
        }));
    }
    let mut option = base();
    option["xAxis"] = json!({ "type": "time" });
    option["yAxis"] = json!({ "type": "value", "scale": true, "name": unit });
    option["series"] = json!(series);
    Some(option)
}

/// Step lines over time, one per member of a group (`group -> member -> points`): every member's
/// line bears its group's name, so the legend lists (and toggles) a group once and ECharts gives
/// its lines one color; a point's tooltip names its member. For values that hold until the next
/// point (a model's generation until it is retrained) of many members that each count their own
/// (the lanes of a detector and sensor type).
pub fn grouped_steps(groups: &BTreeMap<String, BTreeMap<String, Points>>, unit: &str) -> Option<Value> {
    if groups.values().flat_map(BTreeMap::values).all(Vec::is_empty) {
        return None;
    }
    let series: Vec<Value> = groups
        .iter()
        .flat_map(|(name, members)| {
            members.iter().map(move |(member, points)| {
                let data: Vec<Value> =
                    points.iter().map(|&(t, v)| json!({ "name": member, "value": [t, v] })).collect();
                json!({ "name": name, "id": format!("{name} / {member}"), "type": "line", "step": "end",
                        "showSymbol": true, "data": data })
            })
        })
        .collect();
    let mut option = base();
    option["tooltip"] = json!({ "trigger": "item" });
    option["xAxis"] = json!({ "type": "time", "axisLabel": { "hideOverlap": true } });
    option["yAxis"] = json!({ "type": "value", "scale": true, "minInterval": 1, "name": unit });
    option["series"] = json!(series);
    Some(option)
}

/// Average lines over time with a shaded band from min to max beneath each (`(t, avg, min, max)`).
pub fn banded_lines(lines: &BTreeMap<String, Vec<(i64, f64, f64, f64)>>) -> Option<Value> {
    if lines.values().all(Vec::is_empty) {
        return None;
    }
    let mut series = Vec::new();
    for (name, points) in lines {
        let stack = format!("band-{name}");
        let low: Points = points.iter().map(|p| (p.0, p.2)).collect();
        let width: Points = points.iter().map(|p| (p.0, p.3 - p.2)).collect();
        let avg: Points = points.iter().map(|p| (p.0, p.1)).collect();
        series.push(json!({ "name": name, "type": "line", "showSymbol": avg.len() <= DOTS_UP_TO, "data": avg }));
        series.push(
            json!({ "name": name, "type": "line", "stack": stack, "symbol": "none", "lineStyle": { "opacity": 0 },
            "data": low, "tooltip": { "show": false } }),
        );
        series.push(
            json!({ "name": name, "type": "line", "stack": stack, "symbol": "none", "lineStyle": { "opacity": 0 },
            "areaStyle": { "opacity": 0.15 }, "data": width, "tooltip": { "show": false } }),
        );
    }
    let mut option = base();
    option["xAxis"] = json!({ "type": "time" });
    option["yAxis"] = json!({ "type": "value", "scale": true });
    option["series"] = json!(series);
    Some(option)
}

/// Bars of one count per category (categories in order).
pub fn bars(counts: &[(String, f64)], name: &str) -> Option<Value> {
    if counts.is_empty() {
        return None;
    }
    let mut option = base();
    option["xAxis"] = json!({ "type": "category", "data": counts.iter().map(|c| &c.0).collect::<Vec<_>>() });
    option["yAxis"] = json!({ "type": "value" });
    option["series"] = json!([{ "name": name, "type": "bar", "data": counts.iter().map(|c| c.1).collect::<Vec<_>>() }]);
    Some(option)
}

/// Counts of `values` in `bins` equal bins over their range, per name: `(lower edges, counts)`.
pub fn histogram(values: &[f64], bins: usize) -> (Vec<f64>, Vec<u64>) {
    let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if values.is_empty() || bins == 0 {
        return (Vec::new(), Vec::new());
    }
    let width = if max > min { (max - min) / bins as f64 } else { 1.0 };
    let mut counts = vec![0_u64; bins];
    for v in values {
        let bin = (((v - min) / width) as usize).min(bins - 1);
        counts[bin] += 1;
    }
    ((0..bins).map(|i| min + width * i as f64).collect(), counts)
}

/// Overlaid histograms, one per name, of `bins` bins each.
pub fn histograms(values: &BTreeMap<String, Vec<f64>>, bins: usize) -> Option<Value> {
    if values.values().all(Vec::is_empty) {
        return None;
    }
    let series: Vec<Value> = values
        .iter()
        .map(|(name, v)| {
            let (edges, counts) = histogram(v, bins);
            let data: Vec<(f64, u64)> = edges.into_iter().zip(counts).collect();
            json!({ "name": name, "type": "bar", "barGap": "-100%", "itemStyle": { "opacity": 0.6 }, "data": data })
        })
        .collect();
    let mut option = base();
    option["xAxis"] = json!({ "type": "value", "scale": true, "name": "score" });
    option["yAxis"] = json!({ "type": "value", "name": "verdicts" });
    option["series"] = json!(series);
    Some(option)
}

/// A heatmap of `matrix[i][j]` over `names` × `names`, from -1 to 1; `None` when no cell is defined.
pub fn heatmap(names: &[String], matrix: &[Vec<Option<f64>>]) -> Option<Value> {
    if matrix.iter().flatten().all(Option::is_none) {
        return None;
    }
    let mut data = Vec::new();
    for (i, row) in matrix.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            if let Some(r) = cell {
                data.push(json!([j, i, (r * 100.0).round() / 100.0]));
            }
        }
    }
    let mut option = base();
    option["tooltip"] = json!({ "position": "top" });
    option["xAxis"] = json!({ "type": "category", "data": names });
    option["yAxis"] = json!({ "type": "category", "data": names });
    option["visualMap"] = json!({ "min": -1, "max": 1, "calculable": true, "orient": "horizontal", "left": "center", "bottom": 0,
        "inRange": { "color": ["#3060c0", "#f0f0f0", "#c03030"] } });
    option["grid"]["bottom"] = json!(60);
    option["series"] = json!([{ "type": "heatmap", "data": data, "label": { "show": true } }]);
    Some(option)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_each_value_once_and_the_maximum_in_the_last_bin() {
        let (edges, counts) = histogram(&[0.0, 0.1, 0.5, 0.99, 1.0], 4);
        assert_eq!(edges, [0.0, 0.25, 0.5, 0.75]);
        assert_eq!(counts, [2, 0, 1, 2]);
    }

    #[test]
    fn grouped_steps_draw_a_line_per_member_under_its_group_name() {
        let lanes = |points: &[(&str, Points)]| points.iter().map(|(m, p)| ((*m).to_owned(), p.clone())).collect();
        let groups = BTreeMap::from([
            (
                "forest co2".to_owned(),
                lanes(&[("partition 0", vec![(10, 1.0), (30, 2.0)]), ("partition 1", vec![(20, 1.0)])]),
            ),
            ("forest pressure".to_owned(), lanes(&[("partition 1", vec![(5, 1.0)])])),
        ]);
        let option = grouped_steps(&groups, "generation").expect("an option");
        let series = option["series"].as_array().expect("series");
        let drawn: Vec<_> = series.iter().map(|s| (s["name"].clone(), s["id"].clone(), s["step"].clone())).collect();
        assert_eq!(
            drawn,
            [
                (json!("forest co2"), json!("forest co2 / partition 0"), json!("end")),
                (json!("forest co2"), json!("forest co2 / partition 1"), json!("end")),
                (json!("forest pressure"), json!("forest pressure / partition 1"), json!("end")),
            ]
        );
        assert_eq!(
            series[0]["data"],
            json!([{ "name": "partition 0", "value": [10, 1.0] }, { "name": "partition 0", "value": [30, 2.0] }])
        );
        assert_eq!(option["tooltip"]["trigger"], json!("item"));
        let empty = BTreeMap::from([("forest co2".to_owned(), lanes(&[("partition 0", vec![])]))]);
        assert_eq!(grouped_steps(&empty, "generation"), None);
    }
}
