//! The dashboard's building blocks.

pub mod kpis;
pub mod partitions;
pub mod tables;
