//! iotstream: a real-time IoT monitoring pipeline.
pub mod plugins;
pub mod reading;
