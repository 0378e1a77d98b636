//! The TCP echo traffic generator (`dockertrace workload server|client`).
//!
//! By default it speaks the study's protocol: a TCP echo server on port 10000 and a client that
//! sends a 42-byte message, waits for the whole echo (one request outstanding) and repeats. The
//! server echoes bytes as they arrive and the client reads until it has the full message back,
//! so either side interoperates with simple socket echo scripts like the study's
//! `server.py`/`client.py`. Unlike the study's client, nothing is printed per message.
//!
//! Everything is synchronous (`std::net`, a thread per connection, `TCP_NODELAY`), so the
//! library functions can also run in-process, e.g. from tests inside network namespaces.

mod burst;
mod client;
mod histogram;
mod report;
mod server;
mod target;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{anyhow, Result};

pub use burst::{run_burst, BurstArgs, BurstReport};
pub use client::run_client;
pub use report::{RttSummary, WorkloadReport};
pub use server::{bind_server, run_server, Server};
pub use target::Target;

/// The study's server port.
pub const DEFAULT_PORT: u16 = 10000;
/// The study's message size in bytes.
pub const DEFAULT_MESSAGE_SIZE: u32 = 42;

/// `dockertrace workload ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum WorkloadCommand {
    /// Run the TCP echo server (echoes every byte back until the client closes).
    Server(ServerArgs),
    /// Run the client against an echo server and print what it measured.
    Client(ClientArgs),
    /// Send UDP datagrams over loopback at a fixed rate (a steady, synthetic source of kernel
    /// events, used by `cargo xtask bench` to find the highest rate traced without loss).
    Burst(BurstArgs),
    /// Sleep until killed (keeps a container alive for `docker exec`).
    #[command(hide = true)]
    Idle,
}

/// Options of `dockertrace workload server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (`0.0.0.0` = every IPv4 address, `::` = every IPv6 address).
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub listen: IpAddr,

    /// TCP port to listen on (0 = any free port).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Exit after this many seconds (default: run until killed).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Print nothing but errors (no per-connection lines on stderr).
    #[arg(long)]
    pub quiet: bool,
}

/// Options of `dockertrace workload client`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server to connect to: HOST, HOST:PORT, IPV6 or [IPV6]:PORT. A trailing /PREFIX (the
    /// study's `172.17.0.2/16` form) is ignored; a port given here wins over --port.
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Server TCP port.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Message size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MESSAGE_SIZE)]
    pub size: u32,

    /// Number of parallel TCP connections (one thread each).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,

    /// How long to measure, in seconds (after the warm-up).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,

    /// Stop after N measured messages in total (split over the connections) instead of after
    /// --duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,

    /// Traffic pattern.
    #[arg(long, value_enum, default_value_t = Pattern::Echo)]
    pub pattern: Pattern,

    /// Keep retrying to connect for this many seconds (the server may still be starting).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub connect_timeout: f64,

    /// Print the final report as one JSON line on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Send traffic for this many seconds before measuring.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub warmup: f64,
}

/// How the client loads each connection.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// One message outstanding: send, wait for the whole echo, repeat; RTTs are measured.
    #[default]
    Echo,
    /// Bulk: write continuously while another thread drains the echo; throughput only.
    Stream,
}

impl Pattern {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::Echo => "echo",
            Pattern::Stream => "stream",
        }
    }
}

impl ClientArgs {
    /// The command-line defaults for `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            port: DEFAULT_PORT,
            size: DEFAULT_MESSAGE_SIZE,
            connections: 1,
            duration: 5.0,
            count: None,
            pattern: Pattern::Echo,
            connect_timeout: 5.0,
            json: false,
            warmup: 0.0,
        }
    }

    /// Checks the settings a user can get wrong (size, connections, count, durations) without
    /// connecting: the very checks the client makes when it starts. A caller that launches the
    /// client elsewhere (in a container, in a namespace) runs them before deploying anything.
    pub fn validate(&self) -> Result<()> {
        client::validate(self)
    }

    /// The command line (after the binary's name) that runs this client:
    /// `workload client TARGET --port ...`.
    pub fn command_line(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["workload".into(), "client".into(), self.target.clone()];
        let mut opt = |k: &str, val: String| {
            v.push(k.into());
            v.push(val);
        };
        opt("--port", self.port.to_string());
        match self.count {
            Some(n) => opt("--count", n.to_string()),
            None => opt("--duration", self.duration.to_string()),
        }
        opt("--size", self.size.to_string());
        opt("--connections", self.connections.to_string());
        opt("--pattern", self.pattern.as_str().to_owned());
        opt("--connect-timeout", self.connect_timeout.to_string());
        if self.warmup != 0.0 {
            opt("--warmup", self.warmup.to_string());
        }
        if self.json {
            v.push("--json".into());
        }
        v
    }
}

impl Default for ServerArgs {
    /// The command-line defaults.
    fn default() -> Self {
        Self { listen: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: DEFAULT_PORT, duration: None, quiet: false }
    }
}

/// Runs a workload subcommand: the server until it stops, or the client then its report on
/// stdout (text, or one JSON line with `--json`).
pub fn run(cmd: WorkloadCommand) -> Result<()> {
    match cmd {
        WorkloadCommand::Server(args) => run_server(&args, None),
        WorkloadCommand::Idle => loop {
            std::thread::park();
        },
        WorkloadCommand::Burst(args) => {
            let r = run_burst(&args)?;
            if args.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "sent {} datagrams in {:.2} s ({:.0}/s, asked {}/s), received {}",
                    r.sent, r.duration_s, r.rate, r.target_rate, r.received
                );
            }
            Ok(())
        }
        WorkloadCommand::Client(args) => {
            let report = run_client(&args)?;
            if args.json {
                println!("{}", report.to_json_line()?);
            } else {
                print!("{}", report.human());
            }
            Ok(())
        }
    }
}

/// Converts a seconds option, rejecting negative, NaN and absurd values.
fn seconds(option: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow!("{option} must be a non-negative number of seconds, got {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: WorkloadCommand,
    }

    /// Parses `client ...` arguments like the real CLI.
    pub(super) fn parse_client(argv: &[&str]) -> Result<ClientArgs, clap::Error> {
        let argv = std::iter::once("dockertrace").chain(argv.iter().copied());
        match Cli::try_parse_from(argv)?.cmd {
            WorkloadCommand::Client(args) => Ok(args),
            _ => panic!("expected the client subcommand"),
        }
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn client_defaults_match_new() {
        let parsed = parse_client(&["client", "172.17.0.2/16"]).unwrap();
        let built = ClientArgs::new("172.17.0.2/16");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }

    #[test]
    fn server_defaults_match_default() {
        let cli = Cli::try_parse_from(["dockertrace", "server"]).unwrap();
        let WorkloadCommand::Server(parsed) = cli.cmd else {
            panic!("expected the server subcommand");
        };
        assert_eq!(format!("{parsed:?}"), format!("{:?}", ServerArgs::default()));
    }

    #[test]
    fn client_options_parse() {
        let args = parse_client(&[
            "client",
            "[::1]:9",
            "--pattern",
            "stream",
            "--connections",
            "4",
            "--duration",
            "1.5",
            "--json",
            "--warmup",
            "0.5",
            "--size",
            "1000",
        ])
        .unwrap();
        assert_eq!(args.pattern, Pattern::Stream);
        assert_eq!(args.connections, 4);
        assert_eq!(args.duration, 1.5);
        assert_eq!(args.size, 1000);
        assert!(args.json);
        assert_eq!(args.warmup, 0.5);
    }

    #[test]
    fn command_line_parses_back_to_the_same_settings() {
        let mut a = ClientArgs::new("10.213.0.2");
        (a.port, a.size, a.connections, a.duration) = (10033, 1000, 3, 2.5);
        (a.pattern, a.connect_timeout, a.json, a.warmup) = (Pattern::Stream, 10.0, true, 0.5);
        let mut b = a.clone();
        b.count = Some(7);
        for args in [a, b, ClientArgs::new("h")] {
            let line = args.command_line();
            assert_eq!(line[..2], ["workload", "client"]);
            let argv: Vec<&str> = line[1..].iter().map(String::as_str).collect();
            let mut parsed = parse_client(&argv).unwrap();
            if args.count.is_some() {
                parsed.duration = args.duration; // --count replaces --duration
            }
            assert_eq!(format!("{parsed:?}"), format!("{args:?}"));
        }
    }

    #[test]
    fn count_and_duration_conflict() {
        assert!(parse_client(&["client", "h", "--count", "5"]).is_ok());
        assert!(parse_client(&["client", "h", "--count", "5", "--duration", "2"]).is_err());
    }

    #[test]
    fn seconds_validation() {
        assert_eq!(seconds("--x", 0.25).unwrap(), Duration::from_millis(250));
        assert!(seconds("--x", -1.0).is_err());
        assert!(seconds("--x", f64::NAN).is_err());
        assert!(seconds("--x", f64::INFINITY).is_err());
    }
}
