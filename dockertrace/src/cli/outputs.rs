//! The reports' outputs shared by `--mode` runs and the offline commands: the per-mode
//! tables and the comparison on stdout, `--svg DIR` and `--html FILE`.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
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

impl OutputArgs {
    /// Checks that `--svg` and `--html` can be written, before anything runs.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(dir) = &self.svg {
            check_dir("--svg", dir)?;
        }
        if let Some(file) = &self.html {
            check_file("--html", file)?;
        }
        Ok(())
    }
}

/// What the reports on stdout look like (`report --format`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// The per-mode reports and the comparison, as tables for a terminal.
    #[default]
    Text,
    /// GitHub-flavoured Markdown for a CI job's summary (`>> "$GITHUB_STEP_SUMMARY"`): the
    /// comparison, the tracer's cost, drops and hop ladders.
    Markdown,
    /// One JSON document (docs/json-schema.md, "Summary").
    Json,
}

/// Prints the per-mode reports and the comparison, and writes `--svg` / `--html`. A file that
/// cannot be written does not keep the others from being written: the error names them all.
pub fn present(
    runs: &[ModeRun],
    skipped: Vec<(String, String)>,
    out: &OutputArgs,
    style: Style,
) -> anyhow::Result<()> {
    present_as(runs, skipped, out, style, Format::Text, "dockertrace: networking modes compared")
}

/// [`present`] in one of the [`Format`]s; `title` heads the Markdown summary.
pub fn present_as(
    runs: &[ModeRun],
    skipped: Vec<(String, String)>,
    out: &OutputArgs,
    style: Style,
    format: Format,
    title: &str,
) -> anyhow::Result<()> {
    let reports: Vec<ModeReport> = runs.iter().map(|r| ModeReport::from_run(r, out.paths)).collect();
    let comparison = Comparison::new(reports, skipped);
    let text = match format {
        Format::Text => {
            let mut text = String::new();
            for m in &comparison.modes {
                text.push_str(&tables::render_mode(m, style, out.functions));
            }
            if comparison.modes.len() + comparison.skipped.len() > 1 {
                text.push_str(&tables::render_comparison(&comparison, style, out.functions));
            }
            text
        }
        Format::Markdown => crate::render::markdown::render(&comparison, title),
        Format::Json => crate::render::json::render(&comparison),
    };
    print!("{text}");
    let mut failures = Failures::default();
    if let Some(dir) = &out.svg {
        if let Some(written) = failures.note(crate::render::flame::write_svgs(dir, runs)) {
            eprintln!("dockertrace: wrote {} files to {}", written.len(), dir.display());
        }
    }
    if let Some(file) = &out.html {
        let written =
            crate::render::html::render(&comparison, runs, "dockertrace: networking modes compared")
                .and_then(|page| {
                    std::fs::write(file, page).with_context(|| format!("cannot write {}", file.display()))
                });
        if failures.note(written).is_some() {
            eprintln!("dockertrace: wrote {}", file.display());
        }
    }
    failures.into_result()
}

/// Results that could not be written; the others still are.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Keeps the error of a failed write; the value of one that worked.
    pub fn note<T, E: Into<anyhow::Error>>(&mut self, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(crate::errors::describe(&e.into()));
                None
            }
        }
    }

    /// One error naming every failed write, if any failed.
    pub fn into_result(self) -> anyhow::Result<()> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!("{}", self.0.join("; "))),
        }
    }
}

/// Checks that `path` can be written as the output of `option` (a file): it is not a
/// directory, its directory exists, and a file can be created there (or the existing file
/// opened for writing). Nothing is left behind: a file created to find out is removed again.
pub fn check_file(option: &str, path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    if path.is_dir() {
        bail!("{option} {shown}: is a directory, not a file");
    }
    let dir = parent(path);
    if !dir.exists() {
        bail!("{option} {shown}: directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{option} {shown}: {} is not a directory", dir.display());
    }
    if path.exists() {
        // Opened without truncating: the file stays as it is until the results are written.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{option} {shown}: cannot write it: {e}"))?;
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("{option} {shown}: cannot create files in {}: {e}", dir.display()))?;
    std::fs::remove_file(path)
        .map_err(|e| anyhow::anyhow!("{option} {shown}: cannot remove the test file: {e}"))
}

/// Checks that `dir` can hold the outputs of `option` (a directory, created when missing):
/// it is a directory, or its nearest existing ancestor is one in which files can be created.
pub fn check_dir(option: &str, dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    let mut existing = dir;
    while !existing.exists() {
        existing = parent(existing);
    }
    if !existing.is_dir() {
        bail!("{option} {shown}: {} is not a directory", existing.display());
    }
    let probe = existing.join(format!(".dockertrace-check-{}", std::process::id()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&probe).map_err(|e| {
        anyhow::anyhow!("{option} {shown}: cannot create files in {}: {e}", existing.display())
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The directory a path is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        Some(_) => Path::new("."),
        None => path,
    }
}

/// An output file opened before the run (`--json`). Its old content goes only when the first
/// writer is taken; a file this run created is removed again if no writer ever was (the run
/// ended before producing anything).
pub struct OutputFile {
    path: PathBuf,
    file: File,
    created: bool,
    used: bool,
}

impl OutputFile {
    /// Opens (or creates) `path` for `option`, without truncating it yet.
    pub fn open(option: &str, path: &Path) -> anyhow::Result<OutputFile> {
        check_file(option, path)?;
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{option} {}: {e}", path.display()))?;
        Ok(OutputFile { path: path.to_owned(), file, created, used: false })
    }

    /// A handle to write through; the handles share one position, so what several runs write
    /// follows one another. The first one empties the file.
    pub fn writer(&mut self) -> anyhow::Result<File> {
        let cannot = || format!("cannot write {}", self.path.display());
        if !self.used {
            self.file.set_len(0).with_context(cannot)?;
            self.used = true;
        }
        self.file.try_clone().with_context(cannot)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.created && !self.used {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("dt-outputs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn files_are_checked_without_leaving_anything() {
        let s = Scratch::new("file");
        check_file("--record", &s.0.join("new.json")).unwrap();
        assert_eq!(entries(&s.0), 0, "the test file is removed");
        let old = s.0.join("old.json");
        std::fs::write(&old, "keep me").unwrap();
        check_file("--record", &old).unwrap();
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "keep me", "not truncated");
        let e = check_file("--record", &s.0.join("no/such/dir/x.json")).unwrap_err().to_string();
        assert!(e.starts_with("--record ") && e.ends_with("no/such/dir does not exist"), "{e}");
        let e = check_file("--html", &s.0).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_file("--html", &old.join("x.html")).unwrap_err().to_string();
        assert!(e.contains("old.json is not a directory"), "{e}");
        check_file("--json", Path::new("dt-outputs-bare-name-check")).unwrap();
        assert!(!Path::new("dt-outputs-bare-name-check").exists());
    }

    #[test]
    fn directories_may_be_missing_but_not_files() {
        let s = Scratch::new("dir");
        check_dir("--svg", &s.0.join("a/b")).unwrap();
        check_dir("--svg", &s.0).unwrap();
        assert_eq!(entries(&s.0), 0, "nothing created");
        let f = s.0.join("file");
        std::fs::write(&f, "").unwrap();
        let e = check_dir("--svg", &f.join("sub")).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn an_output_file_goes_unless_written_or_older() {
        let s = Scratch::new("keep");
        let p = s.0.join("events.jsonl");
        drop(OutputFile::open("--json", &p).unwrap());
        assert!(!p.exists(), "removed: the run ended before producing anything");
        let mut f = OutputFile::open("--json", &p).unwrap();
        std::io::Write::write_all(&mut f.writer().unwrap(), b"a\n").unwrap();
        std::io::Write::write_all(&mut f.writer().unwrap(), b"b\n").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n", "runs follow one another");
        drop(OutputFile::open("--json", &p).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n", "untouched until written");
        let mut f = OutputFile::open("--json", &p).unwrap();
        std::io::Write::write_all(&mut f.writer().unwrap(), b"c\n").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "c\n", "emptied by the first writer");
    }

    #[test]
    fn failures_are_one_line() {
        let mut f = Failures::default();
        assert_eq!(f.note(Ok::<_, anyhow::Error>(3)), Some(3));
        f.note(Err::<(), _>(anyhow::anyhow!("cannot write a")));
        f.note(Err::<(), _>(anyhow::anyhow!("cannot write b")));
        assert_eq!(f.into_result().unwrap_err().to_string(), "cannot write a; cannot write b");
        assert!(Failures::default().into_result().is_ok());
    }
}
