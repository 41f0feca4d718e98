//! The `misbehaving` detector: a test plugin for the host's fault isolation, never a real stage.
//!
//! It behaves for `after_calls` detect calls (counting readings per sensor, its exportable state),
//! then breaks the contract in the way its `mode` names, on every call after. `cargo xtask plugins`
//! builds it into `dist/test-plugins/`, away from the plugins folder a running host loads.
//! [`misbehave`] holds the behaviour, tested natively; `export_detector!` makes it a component.

pub mod misbehave;

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_detector!(crate::misbehave::Misbehaving);
