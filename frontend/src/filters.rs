//! The filter bar: a sensor type and a location that apply on every tab and live in the URL's
//! query (`?type=humidity&location=lab`), so a filtered view can be bookmarked and shared.

use iotstream_api::{Named, ReadingRow, SensorType};
use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_location, use_navigate, use_query_map};

/// The filters in force, read from the URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Only this sensor type.
    pub sensor_type: Option<SensorType>,
    /// Only this location.
    pub location: Option<String>,
}

impl Filter {
    /// Whether `reading` passes.
    pub fn admits(&self, sensor_type: SensorType, location: &str) -> bool {
        self.sensor_type.is_none_or(|t| t == sensor_type) && self.location.as_deref().is_none_or(|l| l == location)
    }

    /// Whether a reading passes.
    pub fn admits_reading(&self, reading: &ReadingRow) -> bool {
        self.admits(reading.sensor_type, &reading.location)
    }

    /// The API's query parameters for these filters (`&sensor_type=…&location=…`, or empty).
    pub fn api_query(&self) -> String {
        let mut query = String::new();
        if let Some(t) = self.sensor_type {
            query.push_str(&format!("&sensor_type={}", t.as_str()));
        }
        if let Some(l) = &self.location {
            query.push_str(&format!("&location={}", js_sys::encode_uri_component(l)));
        }
        query
    }
}

/// The filters in the current URL (an unknown type in the URL is ignored, not an error page).
pub fn use_filter() -> Memo<Filter> {
    let query = use_query_map();
    Memo::new(move |_| {
        let query = query.get();
        Filter {
            sensor_type: query.get("type").and_then(|t| <SensorType as Named>::from_name(&t)),
            location: query.get("location").filter(|l| !l.is_empty()),
        }
    })
}

/// Sets (or clears, when empty) the query parameter `key`, keeping the path and the others.
fn set_param(key: &'static str) -> impl Fn(String) + Clone {
    let navigate = use_navigate();
    let location = use_location();
    let query = use_query_map();
    move |value: String| {
        let mut params = query.get_untracked();
        if value.is_empty() {
            params.remove(key);
        } else {
            params.replace(key, value);
        }
        let search = params.to_query_string();
        navigate(&format!("{}{search}", location.pathname.get_untracked()), NavigateOptions::default());
    }
}

/// The bar: a type and a location picker; `locations` are those the stream has shown.
#[component]
pub fn FilterBar(
    /// Locations to offer.
    locations: Signal<Vec<String>>,
) -> impl IntoView {
    let filter = use_filter();
    let set_type = set_param("type");
    let set_location = set_param("location");
    let selected_type = move || filter.get().sensor_type.map(|t| t.as_str().to_owned()).unwrap_or_default();
    let selected_location = move || filter.get().location.unwrap_or_default();
    view! {
        <div class="filters">
            <label>"type "
                <select id="filter-type" prop:value=selected_type on:change=move |ev| set_type(event_target_value(&ev))>
                    <option value="">"all"</option>
                    // Each option says whether it is chosen: the select's own value is set before
                    // its options exist, and would otherwise show the first one.
                    {SensorType::ALL.iter().map(|t| view! {
                        <option value=t.as_str() selected=move || selected_type() == t.as_str()>{t.as_str()}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"location "
                <select id="filter-location" prop:value=selected_location on:change=move |ev| set_location(event_target_value(&ev))>
                    <option value="">"all"</option>
                    {move || {
                        let mut all = locations.get();
                        if let Some(chosen) = filter.get().location.filter(|l| !all.contains(l)) {
                            all.push(chosen);
                        }
                        let chosen = selected_location();
                        all.into_iter().map(|l| {
                            let (label, selected) = (l.clone(), l == chosen);
                            view! { <option value=l selected=selected>{label}</option> }
                        }).collect_view()
                    }}
                </select>
            </label>
        </div>
    }
}
