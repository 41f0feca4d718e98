//! The dashboard's building blocks.

pub mod kpis;
pub mod tables;
