//! Plugins: every plugin's health and resources and what happened to them (live), the admin
//! actions (with the host's admin token), and the dead letters by reason with the newest entries
//! (read from the API every few seconds).

use iotstream_api::{DeadLetterCount, DeadLetterRow, Named};
use leptos::prelude::*;

use crate::admin::{Admin, AdminBar};
use crate::components::tables::{PluginEventsTable, PluginsTable};
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::live::LiveFeed;

/// The plugins tab.
#[component]
pub fn Plugins() -> impl IntoView {
    let feed = expect_context::<LiveFeed>();
    let admin = expect_context::<Admin>();
    let tick = refresh_tick();
    let counts = LocalResource::new(move || {
        tick.track();
        get_json::<Vec<DeadLetterCount>>("/api/dead-letters/counts")
    });
    let newest = LocalResource::new(move || {
        tick.track();
        get_json::<Vec<DeadLetterRow>>("/api/dead-letters?limit=20")
    });
    view! {
        <AdminBar admin=admin />
        <PluginsTable rows=Signal::derive(move || feed.view.get().plugins) admin=admin />
        <PluginEventsTable rows=Signal::derive(move || feed.view.get().plugin_events) />
        <section class="grid">
            <div class="panel">
                <h2>"Dead letters by reason"</h2>
                {move || loaded(counts.get(), |counts| if counts.is_empty() {
                    view! { <p class="empty">"no dead letters"</p> }.into_any()
                } else {
                    view! { <table id="dead-letter-counts"><thead><tr><th>"reason"</th><th>"count"</th></tr></thead><tbody>
                        {counts.into_iter().map(|c| view! { <tr><td>{c.reason.as_str()}</td><td class="num">{c.count}</td></tr> }).collect_view()}
                    </tbody></table> }.into_any()
                })}
            </div>
            <div class="panel">
                <h2>"Newest dead letters"</h2>
                {move || loaded(newest.get(), |rows| if rows.is_empty() {
                    view! { <p class="empty">"no dead letters"</p> }.into_any()
                } else {
                    view! { <table id="dead-letters"><thead><tr><th>"received"</th><th>"reason"</th><th>"error"</th><th>"payload"</th></tr></thead><tbody>
                        {rows.into_iter().map(|d| view! { <tr>
                            <td>{d.received_at.format("%H:%M:%S").to_string()}</td><td>{d.reason.as_str()}</td>
                            <td>{d.error}</td><td class="payload">{d.payload.chars().take(80).collect::<String>()}</td>
                        </tr> }).collect_view()}
                    </tbody></table> }.into_any()
                })}
            </div>
        </section>
    }
}
