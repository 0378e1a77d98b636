//! Outputs of the pipeline: the [`crate::pipeline::Sink`] implementations.
pub mod json;
pub mod live;
pub mod pcap;
