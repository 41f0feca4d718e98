//! The iotstream dashboard: a Leptos single-page app rendered in the browser, one URL per tab,
//! fed by the host's live stream (`/api/stream`, server-sent events) and, for history and
//! aggregates, its JSON API; charts drawn by Apache ECharts, served by the host (no CDN).
//!
//! Layout: [`live`] (the event source, the bounded live points), [`fetch`] (API reads),
//! [`filters`] (the filter bar, in the URL), [`chart`] and [`options`] (ECharts and the options
//! built for it), [`app`] (the shell and routes), [`pages`] (one module per tab), [`components`]
//! (KPI cards and tables), [`admin`] (the admin token and actions), [`range`] (the time-range
//! picker of the history-backed tabs).

mod admin;
mod app;
mod chart;
mod components;
mod fetch;
mod filters;
mod live;
mod options;
mod pages;
mod range;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
