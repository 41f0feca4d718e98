//! The `misbehaving-windows` aggregator: a test plugin for the host's checks of an aggregator's
//! output and of its ticks, never a real stage (the `misbehaving` detector's counterpart).
//!
//! While it behaves, every batch closes one window summarising the batch (see [`windows`]); once
//! it misbehaves it answers in the way its `mode` names: text or times PostgreSQL cannot store,
//! two windows with one key, or a sleep in `aggregate` or `tick`. `cargo xtask plugins` builds it
//! into `dist/test-plugins/`.

pub mod windows;

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_aggregator!(crate::windows::MisbehavingWindows);
