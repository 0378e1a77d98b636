//! The reports' outputs shared by `--mode` runs and the offline commands: the per-mode
//! tables and the comparison on stdout, `--svg DIR` and `--html FILE`.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::{
    compare::{Comparison, ModeReport},
    recording::ModeRun,
    render::{style::Style, tables},
};

/// Where to write pictures and pages.
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Write folded stacks, flame graphs per mode and differential flame graphs into DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Write one self-contained HTML page with the comparison and the flame graphs.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Stack paths listed per mode.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub paths: usize,
    /// Functions listed per mode and in the matrix.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub functions: usize,
}

/// Prints the per-mode reports and the comparison, and writes `--svg` / `--html`.
pub fn present(
    runs: &[ModeRun],
    skipped: Vec<(String, String)>,
    out: &OutputArgs,
    style: Style,
) -> anyhow::Result<()> {
    let reports: Vec<ModeReport> = runs.iter().map(|r| ModeReport::from_run(r, out.paths)).collect();
    let comparison = Comparison::new(reports, skipped);
    let mut text = String::new();
    for m in &comparison.modes {
        text.push_str(&tables::render_mode(m, style, out.functions));
    }
    if comparison.modes.len() + comparison.skipped.len() > 1 {
        text.push_str(&tables::render_comparison(&comparison, style, out.functions));
    }
    print!("{text}");
    if let Some(dir) = &out.svg {
        let written = crate::render::flame::write_svgs(dir, runs)?;
        eprintln!("dockertrace: wrote {} files to {}", written.len(), dir.display());
    }
    if let Some(file) = &out.html {
        let page = crate::render::html::render(&comparison, runs, "dockertrace: networking modes compared")?;
        std::fs::write(file, page).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("dockertrace: wrote {}", file.display());
    }
    Ok(())
}
