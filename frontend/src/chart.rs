//! Charts through Apache ECharts, the page's one JavaScript library: `echarts.min.js` is served by
//! the host beside the app (the xtask takes it from the npm registry, pinned and integrity-checked),
//! so the dashboard works offline. A chart is a `<div>` and a signal of its ECharts option, built
//! as JSON on the Rust side; every change of the option redraws it.

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// One ECharts instance, bound to one element.
    type EChartsInstance;
    #[wasm_bindgen(js_namespace = echarts, js_name = init, catch)]
    fn echarts_init(element: &web_sys::HtmlElement, theme: JsValue) -> Result<EChartsInstance, JsValue>;
    #[wasm_bindgen(method, js_name = setOption, catch)]
    fn set_option(this: &EChartsInstance, option: &JsValue, not_merge: bool) -> Result<(), JsValue>;
    #[wasm_bindgen(method)]
    fn resize(this: &EChartsInstance);
    #[wasm_bindgen(method, js_name = getWidth)]
    fn get_width(this: &EChartsInstance) -> f64;
    #[wasm_bindgen(method)]
    fn on(this: &EChartsInstance, event: &str, handler: &js_sys::Function);
    #[wasm_bindgen(method)]
    fn dispose(this: &EChartsInstance);
}

/// The page's clock in milliseconds (sub-millisecond where the browser allows).
fn now_millis() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now())
}

/// Whether the browser prefers a dark scheme: charts follow the page's theme (see `style.css`).
pub fn prefers_dark() -> bool {
    web_sys::window()
        .and_then(|w| w.match_media("(prefers-color-scheme: dark)").ok().flatten())
        .is_some_and(|query| query.matches())
}

/// A chart drawn from `option` (an ECharts option object); `None` shows `empty` instead.
#[component]
pub fn Chart(
    /// The element id, for tests.
    #[prop(into)]
    id: String,
    /// The chart's title, shown above it.
    title: Signal<String>,
    /// The option, or `None` while there is nothing to draw.
    option: Signal<Option<Value>>,
    /// What to say while there is nothing to draw.
    #[prop(default = "waiting for data…")]
    empty: &'static str,
    /// Set to the name of the series clicked, when given.
    #[prop(optional)]
    picked: Option<WriteSignal<Option<String>>>,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Div>::new();
    let instance: Rc<RefCell<Option<EChartsInstance>>> = Rc::new(RefCell::new(None));
    let (failure, set_failure) = signal(None::<String>);
    // The click handler lives as long as the chart: dropped with it below.
    let on_click = picked.map(|picked| {
        Closure::<dyn FnMut(JsValue)>::new(move |params: JsValue| {
            let name = js_sys::Reflect::get(&params, &JsValue::from_str("seriesName")).ok().and_then(|n| n.as_string());
            picked.set(name);
        })
    });
    let handler: Option<js_sys::Function> =
        on_click.as_ref().map(|c| c.as_ref().unchecked_ref::<js_sys::Function>().clone());
    let drawn = instance.clone();
    Effect::new(move |_| {
        let option = option.get();
        let (Some(element), Some(option)) = (node.get(), option) else { return };
        let mut slot = drawn.borrow_mut();
        if slot.is_none() {
            let theme = if prefers_dark() { JsValue::from_str("dark") } else { JsValue::NULL };
            match echarts_init(&element, theme) {
                Ok(chart) => {
                    if let Some(handler) = &handler {
                        chart.on("click", handler);
                    }
                    *slot = Some(chart);
                }
                Err(_) => return set_failure.set(Some("charts unavailable: echarts.min.js did not load".into())),
            }
        }
        let started = now_millis();
        let parsed = js_sys::JSON::parse(&option.to_string());
        if let (Some(chart), Ok(parsed)) = (slot.as_ref(), parsed)
            && chart.set_option(&parsed, true).is_err()
        {
            set_failure.set(Some("this chart's data could not be drawn".into()));
        }
        // A chart first drawn while its element was still hidden (the "waiting" text showing) took
        // a default size: fit it to the element once the page has laid the element out.
        if let Some(chart) = slot.as_ref()
            && (chart.get_width() - f64::from(element.client_width())).abs() > 1.0
        {
            let later = drawn.clone();
            request_animation_frame(move || {
                if let Some(chart) = later.borrow().as_ref() {
                    chart.resize();
                }
            });
        }
        // What one redraw cost (ECharts draws within `setOption`), and when the chart first drew
        // (milliseconds since the page's navigation started), for the browser tests' figures.
        let _ = element.set_attribute("data-draw-ms", &format!("{:.2}", now_millis() - started));
        if !element.has_attribute("data-first-draw-at") {
            let _ = element.set_attribute("data-first-draw-at", &format!("{:.0}", now_millis()));
        }
    });
    let resize = instance.clone();
    let listener = window_event_listener(leptos::ev::resize, move |_| {
        if let Some(chart) = resize.borrow().as_ref() {
            chart.resize();
        }
    });
    let disposed = SendWrapper::new((instance, on_click));
    on_cleanup(move || {
        listener.remove();
        let chart = disposed.0.borrow_mut().take();
        if let Some(chart) = chart {
            chart.dispose();
        }
    });
    let has_data = move || option.with(Option::is_some);
    view! {
        <div class="panel chart-panel">
            <h2>{title}</h2>
            <Show when=move || failure.get().is_some()>
                <p class="error">{move || failure.get()}</p>
            </Show>
            <Show when=move || !has_data()>
                <p class="empty">{empty}</p>
            </Show>
            <div class="chart" id=id node_ref=node class:hidden=move || !has_data()></div>
        </div>
    }
}
