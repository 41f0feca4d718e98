//! The dashboard's admin actions: an operator types the host's admin token (kept in this page's
//! memory only, never stored), then may reload every plugin or release a held one from the plugins
//! table. Each is a `POST /api/admin/...` with the token as a bearer; the host's answer (what it
//! did, or why not) is shown beside the token field.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

/// The token typed in, and the last answer to show.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    /// The admin token (empty: no admin actions offered).
    pub token: RwSignal<String>,
    /// The host's last answer.
    pub answer: RwSignal<String>,
}

impl Admin {
    /// No token yet.
    pub fn new() -> Self {
        Admin { token: RwSignal::new(String::new()), answer: RwSignal::new(String::new()) }
    }

    /// Whether a token was typed in.
    pub fn enabled(&self) -> bool {
        !self.token.get().is_empty()
    }

    /// Posts to `path` with the token and shows the answer.
    pub fn act(&self, path: String) {
        let (token, answer) = (self.token.get_untracked(), self.answer);
        leptos::task::spawn_local(async move {
            let shown = match post(&path, &token).await {
                Ok(body) => body["done"].as_str().or(body["message"].as_str()).unwrap_or_default().to_owned(),
                Err(err) => format!("request failed: {err}"),
            };
            answer.set(shown);
        });
    }
}

/// `POST path` with `token` as the bearer; the JSON body of any answer.
async fn post(path: &str, token: &str) -> Result<serde_json::Value, String> {
    let js = |err: wasm_bindgen::JsValue| format!("{err:?}");
    let init = RequestInit::new();
    init.set_method("POST");
    let request = Request::new_with_str_and_init(path, &init).map_err(js)?;
    request.headers().set("Authorization", &format!("Bearer {token}")).map_err(js)?;
    let window = web_sys::window().ok_or("no window")?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request)).await.map_err(js)?.unchecked_into();
    let text = JsFuture::from(response.text().map_err(js)?).await.map_err(js)?;
    serde_json::from_str(&text.as_string().unwrap_or_default()).map_err(|err| err.to_string())
}

/// The token field, the reload button and the last answer.
#[component]
pub fn AdminBar(
    /// The admin state shared with the plugins table.
    admin: Admin,
) -> impl IntoView {
    view! {
        <div class="panel admin">
            <h2>"Admin"</h2>
            <input id="admin-token" type="password" placeholder="admin token"
                prop:value=move || admin.token.get()
                on:input=move |ev| admin.token.set(event_target_value(&ev)) />
            <button id="admin-reload" disabled=move || !admin.enabled()
                on:click=move |_| admin.act("/api/admin/reload".into())>"reload plugins"</button>
            <span id="admin-answer">{move || admin.answer.get()}</span>
        </div>
    }
}
