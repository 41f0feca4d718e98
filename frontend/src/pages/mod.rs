//! One module per tab, each at its own URL: `/` real-time monitoring, `/windows` windowed
//! aggregates, `/ml` anomaly detection, `/analytics` history from PostgreSQL, `/plugins`.

pub mod analytics;
pub mod ml;
pub mod plugins;
pub mod realtime;
pub mod windows;
