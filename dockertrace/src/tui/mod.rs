//! `--tui`: a full-screen live view (ratatui + crossterm) instead of the line stream.
//!
//! The pipeline feeds a [`TuiSink`], which only updates the [`model::Model`] behind a mutex
//! (bounded: what does not fit is counted). A thread of its own reads the keys and, at most
//! every [`FRAME`], takes a [`model::View`] of the model and draws it ([`draw`]): the tracer
//! never waits for the terminal. While the view is up, the process's own stdout and stderr
//! (progress, warnings, the summaries) go to memory files; the last line of stderr shows in
//! the status line, and everything is printed, in order per stream, once the screen is
//! restored. `q` and Ctrl-C send the process SIGINT: the run stops through the same
//! teardown as a Ctrl-C without the view.
pub mod draw;
pub mod model;

use std::{
    fs::File,
    io::{BufWriter, IsTerminal, Write as _},
    os::{
        fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
        unix::fs::FileExt as _,
    },
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossterm::{
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute, terminal,
};
use ratatui::{backend::CrosstermBackend, Terminal};

use self::model::{Action, Key, Meta, ModeFigures, Model, UiState, View};
use crate::{
    decode::TracedEvent,
    names::Names,
    pipeline::{Progress, Sink},
    summary::TraceReport,
};

/// The shortest time between two frames (at most ~10 redraws a second).
pub const FRAME: Duration = Duration::from_millis(100);

/// Why the view cannot come up here (None: it can).
pub fn unavailable() -> Option<&'static str> {
    if !std::io::stdout().is_terminal() {
        return Some("stdout is not a terminal");
    }
    if !std::io::stdin().is_terminal() {
        return Some("stdin is not a terminal");
    }
    None
}

/// The running kernel's release (`6.18.0-…`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The view's shared model, for the run to say what it is doing.
#[derive(Clone)]
pub struct TuiHandle(Arc<Mutex<Model>>);

impl TuiHandle {
    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic while drawing must not take the tracer with it: the model stays usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A mode (or `trace`) begins; `port`: the workload's server port (request/response).
    pub fn begin(&self, mode: &str, port: Option<u16>) {
        self.lock().begin(mode, port, Arc::default());
        self.phase("setting up");
    }

    pub fn phase(&self, phase: &str) {
        self.lock().phase = phase.to_owned();
    }

    /// The tracer is attached (`attach`: its attach type); devices are shown by `names`.
    pub fn attached(&self, attach: &str, names: Arc<Names>) {
        let mut m = self.lock();
        let (mode, port) = (m.mode.clone(), m.port);
        m.begin(&mode, port, names);
        m.attached(attach);
    }

    /// A mode finished: its figures go to the compare page.
    pub fn finished(&self, figures: ModeFigures) {
        let mut m = self.lock();
        m.compare.retain(|f| f.mode != figures.mode);
        m.compare.push(figures);
        m.phase = "finished".to_owned();
    }

    /// Every mode ran: the view shows the comparison until `q` (which sends SIGINT).
    pub fn linger(&self) {
        let mut m = self.lock();
        m.phase = "all modes done: q prints the reports".to_owned();
        m.traced_since = None;
        m.lingering = true;
    }

    /// Whether the person asked to leave (`q`, Ctrl-C): also when the SIGINT it sent came
    /// before anything listened for it.
    pub fn quit_requested(&self) -> bool {
        self.lock().quit
    }

    /// The sink that feeds the view.
    pub fn sink(&self) -> TuiSink {
        TuiSink(self.clone())
    }
}

/// Feeds the view's model: one lock and a few map updates per event, nothing drawn here.
pub struct TuiSink(TuiHandle);

impl Sink for TuiSink {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        self.0.lock().event(ev);
        Ok(())
    }

    fn tick(&mut self, p: &Progress) -> anyhow::Result<()> {
        self.0.lock().progress(p.counters, p.events);
        Ok(())
    }

    fn finish(&mut self, r: &TraceReport) -> anyhow::Result<()> {
        let mut m = self.0.lock();
        m.progress(r.counters, r.total_events());
        m.phase = "stopped; tearing down".to_owned();
        Ok(())
    }
}

/// The process's stdout and stderr, held in memory files while the view is up.
struct Capture {
    /// The real stdout and stderr.
    saved: [OwnedFd; 2],
    files: [File; 2],
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Capture {
    fn start() -> std::io::Result<Capture> {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let mut saved = Vec::new();
        let mut files = Vec::new();
        for fd in [1, 2] {
            // SAFETY: plain fd syscalls; every returned fd is checked and owned below.
            let dup = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
            // SAFETY: `dup` is a fresh descriptor that nothing else owns.
            saved.push(unsafe { OwnedFd::from_raw_fd(dup) });
            // SAFETY: the name is a NUL-terminated literal.
            let mem = check(unsafe { libc::memfd_create(c"dockertrace-tui".as_ptr(), libc::MFD_CLOEXEC) })?;
            // SAFETY: `mem` is a fresh descriptor that nothing else owns.
            files.push(unsafe { File::from_raw_fd(mem) });
        }
        for (fd, f) in [1, 2].into_iter().zip(&files) {
            // SAFETY: both descriptors are open; dup2 replaces fd 1/2 atomically.
            check(unsafe { libc::dup2(f.as_raw_fd(), fd) })?;
        }
        let [o, e] = <[OwnedFd; 2]>::try_from(saved).map_err(|_| std::io::Error::other("dup"))?;
        let [fo, fe] = <[File; 2]>::try_from(files).map_err(|_| std::io::Error::other("memfd"))?;
        Ok(Capture { saved: [o, e], files: [fo, fe] })
    }

    /// The terminal: a copy of the real stdout.
    fn terminal(&self) -> std::io::Result<File> {
        Ok(File::from(self.saved[0].try_clone()?))
    }

    /// Puts the real stdout and stderr back and prints what was held: stderr's lines first
    /// (progress, teardown), then stdout's (the summaries).
    fn restore(self) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        for (fd, saved) in [2, 1].into_iter().zip([&self.saved[1], &self.saved[0]]) {
            // SAFETY: both descriptors are open.
            unsafe { libc::dup2(saved.as_raw_fd(), fd) };
        }
        for (i, fd) in [(1usize, 2), (0, 1)] {
            let mut at = 0;
            while let Some(chunk) = read_from(&self.files[i], &mut at) {
                write_all(fd, &chunk);
            }
        }
    }
}

/// The next chunk of `f` from `*at` on (None at its end). Reads at an offset: the file's own
/// offset is the one fd 1/2 write at.
fn read_from(f: &File, at: &mut u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 << 10];
    match f.read_at(&mut buf, *at) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            *at += n as u64;
            buf.truncate(n);
            Some(buf)
        }
    }
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a live slice to an open descriptor.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

type Term = Terminal<CrosstermBackend<BufWriter<File>>>;

/// The live view: the terminal in raw mode on the alternate screen, a thread drawing it.
/// Restored by [`Tui::finish`] or on drop (errors, panics).
pub struct Tui {
    handle: TuiHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    capture: Option<Capture>,
}

impl Tui {
    /// Takes the terminal.
    pub fn start(meta: Meta) -> anyhow::Result<Tui> {
        let compare = meta.compare;
        let handle = TuiHandle(Arc::new(Mutex::new(Model::new(meta))));
        let capture = Capture::start()?;
        let mut tui =
            Tui { handle: handle.clone(), stop: Arc::default(), thread: None, capture: Some(capture) };
        let out = tui
            .capture
            .as_ref()
            .map(Capture::terminal)
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("no terminal"))?;
        let mut out = BufWriter::new(out);
        terminal::enable_raw_mode()?;
        execute!(out, terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
        let term = Terminal::new(CrosstermBackend::new(out))?;
        let color = !crate::render::style::no_color();
        let errors = tui.capture.as_ref().map(|c| c.files[1].try_clone()).transpose()?;
        let stop = tui.stop.clone();
        let ui = UiState::new(compare, color);
        tui.thread = Some(std::thread::Builder::new().name("dockertrace-tui".into()).spawn(move || {
            let mut lp = Loop {
                term,
                model: handle,
                stop,
                ui,
                view: View::default(),
                errors,
                read: 0,
                lingered: false,
                frozen: None,
            };
            if let Err(e) = lp.run() {
                lp.model.lock().log_line(&format!("the view failed: {e}"));
            }
        })?);
        Ok(tui)
    }

    pub fn handle(&self) -> TuiHandle {
        self.handle.clone()
    }

    /// Restores the terminal, then prints what the run wrote meanwhile.
    pub fn finish(mut self) {
        self.restore();
    }

    fn restore(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(c) = self.capture.take() {
            if let Ok(f) = c.terminal() {
                let mut out = BufWriter::new(f);
                let _ = execute!(out, terminal::LeaveAlternateScreen, crossterm::cursor::Show);
            }
            let _ = terminal::disable_raw_mode();
            c.restore();
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The drawing thread's state.
struct Loop {
    term: Term,
    model: TuiHandle,
    stop: Arc<AtomicBool>,
    ui: UiState,
    view: View,
    /// The captured stderr, read for the status line.
    errors: Option<File>,
    read: u64,
    /// The view went to the compare page when the runs ended.
    lingered: bool,
    /// The model as it was when the person paused (`p`), while paused.
    frozen: Option<Model>,
}

/// A crossterm key as the view understands it.
fn key_of(k: &event::KeyEvent) -> Option<Key> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return (k.code == KeyCode::Char('c')).then_some(Key::CtrlC);
    }
    Some(match k.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        _ => return None,
    })
}

/// The process's resident memory in KiB.
fn rss_kib() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page / 1024
}

impl Loop {
    fn run(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut second = Instant::now();
        let mut drawn: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            // Keys change the UI state at once; the next frame shows them, never sooner than
            // FRAME after the last (held keys and resizes cannot make more frames, nor take
            // the model's lock more often than ~10 times a second).
            if event::poll(Duration::from_millis(20))? {
                if let Event::Key(k) = event::read()? {
                    if k.kind != KeyEventKind::Release {
                        self.key(&k);
                    }
                }
            }
            if second.elapsed() >= Duration::from_secs(1) {
                second = Instant::now();
                let cpu = crate::cost::process_cpu().as_secs_f64();
                let mut m = self.model.lock();
                m.second();
                (m.cpu_s, m.rss_kib) = (cpu, rss_kib());
            }
            if drawn.is_none_or(|d| d.elapsed() >= FRAME) {
                self.refresh(started);
                self.term.draw(|f| draw::draw(f, &self.view, &self.ui))?;
                drawn = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// A key: the UI state changes, or the run is asked to stop.
    fn key(&mut self, k: &event::KeyEvent) {
        let Some(key) = key_of(k) else { return };
        match self.ui.key(key, &self.view) {
            Action::None | Action::Redraw => {}
            Action::Quit => {
                {
                    let mut m = self.model.lock();
                    m.phase = "stopping".to_owned();
                    m.quit = true;
                }
                // SAFETY: signals this process; the run's SIGINT handler starts the teardown.
                unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
            }
        }
    }

    /// The status line's new output, and a new view (of the paused moment while paused).
    fn refresh(&mut self, started: Instant) {
        let mut fresh = String::new();
        if let Some(f) = &self.errors {
            while let Some(chunk) = read_from(f, &mut self.read) {
                fresh.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        let mut m = self.model.lock();
        for line in fresh.lines().filter(|l| !l.trim().is_empty()) {
            m.log_line(line.trim_start_matches('\n'));
        }
        m.now = started.elapsed().as_secs_f64();
        if m.lingering && self.ui.compare && !self.lingered {
            // The runs are over: the comparison is what there is to see.
            self.lingered = true;
            (self.ui.pane, self.ui.open, self.ui.paused) = (model::Pane::Compare, None, false);
        }
        self.view = m.view_pausable(&mut self.frozen, &self.ui);
    }
}
