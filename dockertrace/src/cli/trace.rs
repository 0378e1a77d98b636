//! `dockertrace trace`.
use std::{fs::File, io::BufWriter, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    filter::{FilterSpec, NetnsSpec},
    kernel::tracefs::Tracefs,
    pipeline::{self, Sink},
    select::{EventSelector, DEFAULT_EVENTS},
    sinks::{json::JsonSink, live::render_summary, live::LiveSink, style::Style},
    tracer::{ProbeState, TraceOptions, Tracer},
};

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Tracepoints to trace: comma-separated perf-style globs (`net:*`, `skb:kfree_skb`,
    /// `net:net_dev_*`); a leading `!` excludes (`net:*,!net:napi_*`).
    #[arg(short, long, value_name = "GLOBS", default_value = DEFAULT_EVENTS)]
    pub events: String,
    /// Keep only events of this network namespace: an inode number, a path
    /// (`/proc/PID/ns/net`) or an `ip netns` name. Repeatable.
    #[arg(long, value_name = "INODE|PATH")]
    pub netns: Vec<NetnsSpec>,
    /// Keep only events of this device (looked up in the --netns namespaces, else in
    /// dockertrace's own). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub dev: Vec<String>,
    /// Keep only events raised by this process (tgid). Repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Keep only TCP packets from or to this port (IPv4 and IPv6).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Also write every event as a JSON line to FILE (`-` for stdout; the live stream is then
    /// turned off). Schema: docs/json-schema.md.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Do not collect kernel stacks (cheaper; no function names).
    #[arg(long)]
    pub no_stacks: bool,
    /// Do not probe the datapath functions (veth_xmit, br_dev_xmit, ...).
    #[arg(long)]
    pub no_datapath: bool,
    /// Print no live stream, only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Live lines per second at most; the rest is summarized each second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub rate: u32,
    /// Kernel functions listed with counts in the summary (the rest by name only).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = parse_ring_mib)]
    pub ring_mib: u32,
}

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v == 0 || !v.is_power_of_two() || v > 1024 {
        return Err("must be a power of two between 1 and 1024".into());
    }
    Ok(v)
}

impl TraceArgs {
    /// Resolves the arguments into tracer options (fails before anything is loaded).
    pub fn options(&self) -> anyhow::Result<TraceOptions> {
        let events = EventSelector::parse(&self.events)?;
        let filter = FilterSpec {
            netns: self.netns.clone(),
            devs: self.dev.clone(),
            pids: self.pid.clone(),
            port: self.port,
        }
        .resolve()?;
        Ok(TraceOptions {
            events,
            filter,
            stacks: !self.no_stacks,
            datapath: !self.no_datapath,
            ring_bytes: Some(self.ring_mib << 20),
        })
    }
}

/// Resolves when the user or the clock ends the run.
pub async fn stop_signal(duration: Option<Duration>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = sleep => {}
    }
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    if let Some(d) = args.duration {
        anyhow::ensure!(d > 0.0 && d.is_finite(), "--duration must be a positive number of seconds");
    }
    crate::tracer::preflight()?;
    let opts = args.options()?;
    if let Ok(tracefs) = Tracefs::locate() {
        // Warn about patterns that matched nothing, unless nothing matched at all (an error).
        if let Some(all) = tracefs.events().ok().filter(|all| !opts.events.select(all).is_empty()) {
            for p in opts.events.unmatched_patterns(&all) {
                eprintln!("dockertrace: warning: no tracepoint matches `{p}`");
            }
        }
    }
    let err = Style::for_stderr();
    let mut tracer = Tracer::start(&opts)?;
    eprintln!(
        "{}",
        err.dim(&format!(
            "dockertrace: attached {} tracepoints and {} datapath probes in {} ms{}; Ctrl-C to stop",
            tracer.tracepoints.len(),
            tracer
                .probes
                .iter()
                .filter(|p| matches!(p.state, ProbeState::Kprobe | ProbeState::Fentry))
                .count(),
            tracer.attach_time.as_millis(),
            if opts.filter.is_empty() { String::new() } else { " (filtered in kernel)".into() },
        ))
    );
    for (tp, e) in &tracer.tracepoint_errors {
        eprintln!("dockertrace: warning: tracepoint {tp} not attached: {e}");
    }
    for p in &tracer.probes {
        if !matches!(p.state, ProbeState::Kprobe) {
            eprintln!("dockertrace: datapath probe {p}");
        }
    }

    let json_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let mut json: Option<JsonSink<Box<dyn std::io::Write>>> = match &args.json {
        None => None,
        Some(p) if json_stdout => Some(JsonSink::new(Box::new(BufWriter::new(std::io::stdout())))),
        Some(p) => Some(JsonSink::new(Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )))),
    };
    let mut live = (!args.quiet && !json_stdout)
        .then(|| LiveSink::new(std::io::stdout().lock(), Style::for_stdout(), args.rate));
    let mut sinks: Vec<&mut dyn Sink> = Vec::new();
    if let Some(j) = json.as_mut() {
        sinks.push(j);
    }
    if let Some(l) = live.as_mut() {
        sinks.push(l);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = args.duration.map(Duration::from_secs_f64);
    let report = runtime.block_on(pipeline::run(&mut tracer, &mut sinks, stop_signal(duration)))?;
    drop(sinks);
    drop(live);
    tracer.stop();
    let summary_style = if json_stdout { Style::for_stderr() } else { Style::for_stdout() };
    let text = render_summary(&report, summary_style, args.top);
    if json_stdout {
        eprint!("\n{text}");
    } else {
        print!("\n{text}");
    }
    Ok(())
}
