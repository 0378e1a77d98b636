//! The workload's figures after a traced run, as terminal text.
use crate::{modes::Mode, render::style::Style, summary::TraceReport, workload::WorkloadReport};

/// The workload's figures and what the kernel did per message.
pub fn render_workload(
    mode: Mode,
    describe: &str,
    w: &WorkloadReport,
    r: &TraceReport,
    style: Style,
) -> String {
    let mut s = format!("\n{}\n", style.bold(&format!("Workload ({mode}: {describe})")));
    s.push_str(&format!("  {}\n", w.human().trim_end().replace('\n', "\n  ")));
    if w.messages > 0 {
        s.push_str(&format!(
            "  kernel events per message: {:.1} ({} events / {} messages)\n",
            r.total_events() as f64 / w.messages as f64,
            r.total_events(),
            w.messages
        ));
    }
    s
}
