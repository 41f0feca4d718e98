//! The `isolation-forest` detector plugin.
//!
//! [`forest`] is the Isolation Forest itself (scikit-learn's semantics), a linfa algorithm
//! ([`linfa`]: `Fit` on a `Dataset`, `Predict` of scores); [`detector`] is the online
//! detector built on it (stationary features, one model per sensor type, bounded retraining, a threshold
//! calibrated on held-out rows; [`config`] its configuration and presets); both
//! are plain Rust tested natively; [`metrics`] scores a detector against labels (ROC AUC). For wasm builds, `export_detector!` makes the detector a
//! component exporting the WIT `detector` interface.

pub mod budget;
pub mod config;
pub mod detector;
pub mod forest;
pub mod linfa;
pub mod metrics;

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_detector!(crate::detector::OnlineForest);
