//! Plugins and the host's health: every plugin's health and resources and what happened to them
//! (live), the partitions of the consumer group and its rebalances (every few seconds), the admin
//! actions (with the host's admin token: reload, release a held plugin, promote or discard a
//! shadow detector beside the live one it shadows), and the dead letters by reason with the newest
//! entries (read from the API every few seconds).

use iotstream_api::{DeadLetterCount, DeadLetterRow, Named, ShadowComparison};
use leptos::prelude::*;

use crate::admin::{Admin, AdminBar};
use crate::components::partitions::PartitionsPanel;
use crate::components::tables::{PluginEventsTable, PluginsTable};
use crate::fetch::{get_json, loaded, refresh_tick};
use crate::live::LiveFeed;

/// Promote and discard buttons for `shadow`, once an admin token is typed in (the host refuses
/// either without the token, and says why).
fn shadow_buttons(admin: Admin, shadow: &str) -> impl IntoView + use<> {
    let (promote, discard) =
        (format!("/api/admin/shadows/{shadow}/promote"), format!("/api/admin/shadows/{shadow}/discard"));
    let (promote_id, discard_id) = (format!("promote-{shadow}"), format!("discard-{shadow}"));
    move || {
        admin.enabled().then(|| {
            let (promote, discard) = (promote.clone(), discard.clone());
            view! {
                <button id=promote_id.clone() on:click=move |_| admin.act(promote.clone())>"promote"</button>
                " "
                <button id=discard_id.clone() on:click=move |_| admin.act(discard.clone())>"discard"</button>
            }
        })
    }
}

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
    let shadows = LocalResource::new(move || {
        tick.track();
        get_json::<Vec<ShadowComparison>>("/api/shadows")
    });
    view! {
        <AdminBar admin=admin />
        <PluginsTable rows=Signal::derive(move || feed.view.get().plugins) admin=admin />
        <div class="panel">
            <h2>"Shadow detectors (promote one to replace its live detector, or discard it)"</h2>
            {move || loaded(shadows.get(), move |rows| if rows.is_empty() {
                view! { <p class="empty">"no shadow detector running"</p> }.into_any()
            } else {
                view! { <table id="shadow-actions"><thead><tr><th>"shadow"</th><th>"version"</th><th>"live detector"</th><th>"judged by both"</th>
                    <th>"agreement"</th><th>"anomalies shadow / live"</th><th>"p50 µs shadow / live"</th><th></th></tr></thead><tbody>
                    {rows.into_iter().map(|s| {
                        let micros = |m: Option<f64>| m.map_or_else(|| "–".to_owned(), |m| format!("{m:.0}"));
                        view! { <tr><td>{s.shadow.clone()}</td><td>{s.shadow_version}</td><td>{s.live_detector}</td>
                            <td class="num">{s.judged_by_both}</td>
                            <td class="num">{s.agreement.map_or_else(|| "–".to_owned(), |a| format!("{:.1} %", a * 100.0))}</td>
                            <td class="num">{format!("{} / {}", s.shadow_anomalies, s.live_anomalies)}</td>
                            <td class="num">{format!("{} / {}", micros(s.shadow_call_micros_p50), micros(s.live_call_micros_p50))}</td>
                            <td>{shadow_buttons(admin, &s.shadow)}</td></tr> }
                    }).collect_view()}
                </tbody></table> }.into_any()
            })}
        </div>
        <PluginEventsTable rows=Signal::derive(move || feed.view.get().plugin_events) />
        <PartitionsPanel />
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
