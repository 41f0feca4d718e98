//! The time-range picker the history-backed tabs share (analytics, ML): last 15 min, 1 h, 24 h or
//! a custom range, kept in the URL (`?range=1h`, or `?range=custom&from=…&to=…`) beside the filters,
//! so a range survives a tab switch, a reload and a shared link.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_location, use_navigate, use_query_map};
use leptos_router::params::ParamsMap;

/// The range presets: their URL name, label and length.
const PRESETS: [(&str, &str, TimeDelta); 3] = [
    ("15m", "last 15 min", TimeDelta::minutes(15)),
    ("1h", "last hour", TimeDelta::hours(1)),
    ("24h", "last 24 h", TimeDelta::hours(24)),
];

/// The preset used when the URL names none.
const DEFAULT_PRESET: &str = "1h";

/// `[from, to)` from the URL's query: a preset ending now, or `from` and `to` for a custom range
/// (as the `datetime-local` inputs give them, read as UTC).
pub fn range_of(query: &ParamsMap) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    range_from(|key| query.get(key))
}

/// [`range_of`] over any lookup of the query's parameters.
fn range_from(query: impl Fn(&str) -> Option<String>) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let name = query("range").unwrap_or_else(|| DEFAULT_PRESET.to_owned());
    if let Some((_, _, length)) = PRESETS.iter().find(|p| p.0 == name) {
        let to = Utc::now();
        return Ok((to - *length, to));
    }
    let parse = |key: &str| {
        let text = query(key).ok_or_else(|| format!("a custom range needs {key}"))?;
        NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M")
            .map(|t| t.and_utc())
            .map_err(|_| format!("{key} {text:?} is not a date and time"))
    };
    let (from, to) = (parse("from")?, parse("to")?);
    if from >= to {
        return Err(format!("the range's start ({from}) is not before its end ({to})"));
    }
    Ok((from, to))
}

/// `from=…&to=…` of an API query for `[from, to)` (RFC 3339, `+` escaped).
pub fn api_range((from, to): (DateTime<Utc>, DateTime<Utc>)) -> String {
    format!("from={}&to={}", from.to_rfc3339(), to.to_rfc3339()).replace('+', "%2B")
}

/// The picker: a button per preset, two `datetime-local` inputs and "apply" for a custom range.
#[component]
pub fn RangePicker() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let location = use_location();
    let pick = move |name: &str, from: Option<String>, to: Option<String>| {
        let mut params = query.get_untracked();
        params.replace("range", name.to_owned());
        for (key, value) in [("from", from), ("to", to)] {
            match value {
                Some(v) => params.replace(key, v),
                None => {
                    params.remove(key);
                }
            }
        }
        let path = location.pathname.get_untracked();
        navigate(&format!("{path}{}", params.to_query_string()), NavigateOptions::default());
    };
    let (custom_from, set_custom_from) = signal(String::new());
    let (custom_to, set_custom_to) = signal(String::new());
    let chosen = move || query.get().get("range").unwrap_or_else(|| DEFAULT_PRESET.to_owned());
    let pick_preset = pick.clone();
    view! {
        <div class="filters" id="range">
            {PRESETS.iter().map(|(name, label, _)| {
                let pick = pick_preset.clone();
                view! { <button class:chosen=move || chosen() == *name on:click=move |_| pick(name, None, None)>{*label}</button> }
            }).collect_view()}
            <label>"from " <input type="datetime-local" on:change=move |ev| set_custom_from.set(event_target_value(&ev)) /></label>
            <label>"to (UTC) " <input type="datetime-local" on:change=move |ev| set_custom_to.set(event_target_value(&ev)) /></label>
            <button on:click=move |_| pick("custom", Some(custom_from.get()), Some(custom_to.get()))>"apply"</button>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(pairs: &[(&str, &str)]) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
        range_from(|key| pairs.iter().find(|p| p.0 == key).map(|p| p.1.to_owned()))
    }

    #[test]
    fn a_custom_range_is_read_as_utc_and_must_not_be_empty() {
        let (from, to) = range(&[("range", "custom"), ("from", "2026-01-01T00:00"), ("to", "2026-01-01T01:30")])
            .expect("a valid range");
        assert_eq!(
            (from.to_rfc3339(), to.to_rfc3339()),
            ("2026-01-01T00:00:00+00:00".into(), "2026-01-01T01:30:00+00:00".into())
        );
        assert_eq!(api_range((from, to)), "from=2026-01-01T00:00:00%2B00:00&to=2026-01-01T01:30:00%2B00:00");
        assert!(range(&[("range", "custom"), ("from", "2026-01-01T01:00"), ("to", "2026-01-01T01:00")]).is_err());
        assert!(range(&[("range", "custom"), ("from", "yesterday"), ("to", "2026-01-01T01:00")]).is_err());
        // A preset ends now and is as long as it says; no range at all is the last hour.
        let (from, to) = range(&[("range", "15m")]).expect("a preset");
        assert_eq!(to - from, TimeDelta::minutes(15));
        let (from, to) = range(&[]).expect("the default");
        assert_eq!(to - from, TimeDelta::hours(1));
    }
}
