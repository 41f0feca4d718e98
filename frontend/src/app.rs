//! The dashboard's shell: the connection badge, outages (only once the host has said so), the tab
//! links, the filter bar, and one route per tab.

use iotstream_api::Stats;
use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::use_location;
use leptos_router::path;

use crate::admin::Admin;
use crate::filters::FilterBar;
use crate::live::{Connection, LiveFeed, connect};
use crate::pages::{analytics::Analytics, ml::Ml, plugins::Plugins, realtime::Realtime, windows::Windows};

/// The tabs: path and label.
const TABS: [(&str, &str); 5] = [
    ("/", "Real-time"),
    ("/windows", "Windows"),
    ("/ml", "ML detection"),
    ("/analytics", "Analytics"),
    ("/plugins", "Plugins"),
];

/// What is down, as the host reported it; nothing while no snapshot has arrived (a page still
/// connecting knows nothing yet and must not claim an outage).
fn warnings(connection: Connection, stats: &Stats) -> String {
    if connection == Connection::Connecting {
        return String::new();
    }
    let mut warnings = Vec::new();
    if !stats.database_ok {
        warnings.push("database unavailable: retrying (nothing is lost; consuming is paused)".to_owned());
    }
    if !stats.broker_ok {
        warnings.push("Kafka brokers unreachable: reconnecting".to_owned());
    }
    for failure in &stats.plugin_failures {
        warnings.push(format!("plugin {} refused: {}", failure.plugin, failure.error));
    }
    warnings.join(" · ")
}

/// The tab links, keeping the filters' query string.
#[component]
fn Tabs() -> impl IntoView {
    let location = use_location();
    view! {
        <nav class="tabs">
            {TABS.iter().map(|(path, label)| {
                let href = move || format!("{path}{}", location.search.get().trim_start_matches('?').split('&')
                    .filter(|p| p.starts_with("type=") || p.starts_with("location="))
                    .fold(String::new(), |q, p| format!("{q}{}{p}", if q.is_empty() { "?" } else { "&" })));
                view! { <A href=href exact=true>{*label}</A> }
            }).collect_view()}
        </nav>
    }
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let feed: LiveFeed = connect("/api/stream");
    provide_context(feed);
    // The admin token, typed in on the plugins tab and kept in the page's memory only.
    provide_context(Admin::new());
    let status = move || match feed.connection.get() {
        Connection::Connecting => ("connecting", "status connecting"),
        Connection::Live => ("live", "status live"),
        Connection::Lost => ("reconnecting", "status lost"),
    };
    let locations = Signal::derive(move || {
        let mut all: Vec<String> = feed.points.get().iter().map(|r| r.location.clone()).collect();
        all.sort();
        all.dedup();
        all
    });
    view! {
        <Router>
            <header>
                <h1>"iotstream"</h1>
                <span id="connection" class=move || status().1>{move || status().0}</span>
                <span class="warning" id="warnings">{move || warnings(feed.connection.get(), &feed.view.get().stats)}</span>
            </header>
            <Tabs />
            <FilterBar locations=locations />
            <main>
                <Routes fallback=|| view! { <p class="error">"no such page"</p> }>
                    <Route path=path!("/") view=Realtime />
                    <Route path=path!("/windows") view=Windows />
                    <Route path=path!("/ml") view=Ml />
                    <Route path=path!("/analytics") view=Analytics />
                    <Route path=path!("/plugins") view=Plugins />
                </Routes>
            </main>
        </Router>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_still_connecting_reports_no_outage() {
        // Before the first snapshot the stats are their defaults: nothing is known to be up.
        let unknown = Stats::default();
        assert_eq!(warnings(Connection::Connecting, &unknown), "");
        // Once the host has said so, an outage is shown, also while reconnecting.
        let down = Stats { database_ok: false, broker_ok: true, ..Stats::default() };
        assert_eq!(
            warnings(Connection::Live, &down),
            "database unavailable: retrying (nothing is lost; consuming is paused)"
        );
        assert_eq!(warnings(Connection::Lost, &Stats { database_ok: true, broker_ok: true, ..Stats::default() }), "");
    }
}
