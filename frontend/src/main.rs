//! The iotstream dashboard: a Leptos single-page app rendered in the browser, fed by the host's
//! live stream (`/api/stream`, server-sent events), never by polling.
//!
//! Layout: [`live`] (the event source), [`app`] (the page), [`components`] (KPI cards and tables),
//! [`admin`] (the admin token and actions).

mod admin;
mod app;
mod components;
mod live;

fn main() {
    leptos::mount::mount_to_body(app::App);
}
