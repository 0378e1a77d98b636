//! Static renderers: text tables, the end-of-run summary, flame graphs and the HTML page.
//! They turn finished reports into text; the streaming outputs are [`crate::sinks`].
pub mod flame;
pub mod html;
pub mod style;
pub mod summary;
pub mod tables;
pub mod workload;
