//! Outputs of the pipeline.
pub mod json;
pub mod live;
pub mod style;
pub mod tables;
