//! Static renderers: text tables, the end-of-run summary, flame graphs, the HTML page, and the
//! Markdown and JSON summaries for CI (`report --format`).
//! They turn finished reports into text; the streaming outputs are [`crate::sinks`].
pub mod flame;
pub mod html;
pub mod json;
pub mod ladders;
pub mod markdown;
pub mod style;
pub mod summary;
pub mod tables;
pub mod workload;
