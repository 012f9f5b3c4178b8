//! Partition logs on zones.

pub mod batch;
