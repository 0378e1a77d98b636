//! The workload client and server against each other and against plain Python socket echo
//! scripts (stand-ins for the study's `server.py`/`client.py`), over loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use dockertrace::workload::{bind_server, run_client, ClientArgs, Pattern, ServerArgs};

/// Our server on 127.0.0.1 with an ephemeral port, stopped and joined on drop.
struct ServerGuard {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ServerGuard {
    fn start() -> Self {
        let args = ServerArgs { listen: Ipv4Addr::LOCALHOST.into(), port: 0, duration: None, quiet: true };
        let server = bind_server(&args).expect("bind the echo server on 127.0.0.1");
        let addr = server.local_addr().expect("server address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = Some(thread::spawn(move || server.serve(Some(flag))));
        Self { addr, stop, thread }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let outcome = thread.join();
            if !thread::panicking() {
                outcome.expect("server thread panicked").expect("server failed");
            }
        }
    }
}

/// A child process killed and reaped on drop, even when the test fails.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop").join(name)
}

fn have_python() -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipping: python3 not found");
    }
    found
}

/// Starts `echo_server.py` on 127.0.0.1 and returns it with the port it printed.
fn python_server() -> (ChildGuard, u16) {
    let child = Command::new("python3")
        .arg(script("echo_server.py"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_server.py");
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read echo_server.py output");
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("echo_server.py printed {line:?} instead of PORT <n>"));
    (guard, port)
}

fn client_args(port: u16) -> ClientArgs {
    let mut args = ClientArgs::new("127.0.0.1");
    args.port = port;
    args.connect_timeout = 5.0;
    args
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind probe socket");
    listener.local_addr().expect("probe address").port()
}

#[test]
fn echo_client_against_our_server_exact_count() {
    let server = ServerGuard::start();
    let mut args = client_args(server.addr.port());
    args.count = Some(500);
    let report = run_client(&args).expect("client run");
    assert_eq!(report.pattern, "echo");
    assert_eq!(report.messages, 500);
    assert_eq!(report.bytes, 500 * 42);
    assert_eq!(report.message_size, 42);
    assert!(report.msgs_per_s > 0.0, "{report:?}");
    let rtt = report.rtt_us.as_ref().expect("echo pattern measures RTT");
    assert_eq!(rtt.samples, 500);
    assert!(rtt.p50 > 0.0 && rtt.p50 <= rtt.p99 && rtt.p99 <= rtt.max * 1.01, "{rtt:?}");
}

#[test]
fn echo_by_duration_with_warmup_and_connections() {
    let server = ServerGuard::start();
    let mut args = client_args(server.addr.port());
    args.target = format!("127.0.0.1:{}/8", server.addr.port());
    args.port = 1; // the port in the target wins
    args.connections = 3;
    args.duration = 0.3;
    args.warmup = 0.1;
    let report = run_client(&args).expect("client run");
    assert_eq!(report.connections, 3);
    assert!(report.messages > 0, "{report:?}");
    assert!(report.duration_s >= 0.3 && report.duration_s < 2.0, "{report:?}");
    assert_eq!(report.rtt_us.as_ref().map(|r| r.samples), Some(report.messages));
}

#[test]
fn count_split_over_connections_with_warmup() {
    let server = ServerGuard::start();
    let mut args = client_args(server.addr.port());
    args.connections = 3;
    args.count = Some(100);
    args.warmup = 0.1;
    let report = run_client(&args).expect("client run");
    assert_eq!(report.messages, 100);
    assert_eq!(report.bytes, 100 * 42);
}

#[test]
fn our_client_against_python_server() {
    if !have_python() {
        return;
    }
    let (_python, port) = python_server();
    let mut args = client_args(port);
    args.count = Some(200);
    let report = run_client(&args).expect("client against echo_server.py");
    assert_eq!(report.messages, 200);
    assert_eq!(report.bytes, 200 * 42);
    assert!(report.rtt_us.is_some());

    // Messages larger than the script's recv(1024) come back in pieces.
    args.size = 5000;
    args.count = Some(50);
    let report = run_client(&args).expect("large messages against echo_server.py");
    assert_eq!(report.bytes, 50 * 5000);

    args.size = 42;
    args.pattern = Pattern::Stream;
    args.connections = 2;
    args.count = Some(20_000);
    let report = run_client(&args).expect("stream against echo_server.py");
    assert_eq!(report.messages, 20_000);
    assert!(report.rtt_us.is_none());
}

#[test]
fn python_client_against_our_server() {
    if !have_python() {
        return;
    }
    let server = ServerGuard::start();
    let port = server.addr.port().to_string();
    let child = Command::new("python3")
        .arg(script("echo_client.py"))
        .args(["127.0.0.1", &port, "--count", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo_client.py");
    let mut guard = ChildGuard(child);
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut out = guard.0.stdout.take().expect("piped stdout");
    let mut err = guard.0.stderr.take().expect("piped stderr");
    out.read_to_string(&mut stdout).expect("client stdout");
    err.read_to_string(&mut stderr).expect("client stderr");
    let status = guard.0.wait().expect("wait for echo_client.py");
    assert!(status.success(), "echo_client.py failed: {status}\n{stdout}{stderr}");
    assert_eq!(stdout.trim(), "OK 200");
}

#[test]
fn stream_pattern_reports_throughput_only() {
    let server = ServerGuard::start();
    let mut args = client_args(server.addr.port());
    args.pattern = Pattern::Stream;
    args.connections = 2;
    args.duration = 1.0;
    let report = run_client(&args).expect("stream run");
    assert_eq!(report.pattern, "stream");
    assert_eq!(report.connections, 2);
    assert!(report.mb_per_s > 0.0, "{report:?}");
    assert!(report.messages > 0, "{report:?}");
    assert!(report.rtt_us.is_none());
    assert!((report.duration_s - 1.0).abs() < 0.01, "{report:?}");
}

#[test]
fn echo_over_ipv6_loopback() {
    let args = ServerArgs { listen: Ipv6Addr::LOCALHOST.into(), port: 0, duration: Some(30.0), quiet: true };
    let server = match bind_server(&args) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback ({e})");
            return;
        }
    };
    let port = server.local_addr().expect("server address").port();
    let stop = Arc::new(AtomicBool::new(false));
    let guard = ServerGuard {
        addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        stop: Arc::clone(&stop),
        thread: Some(thread::spawn(move || server.serve(Some(stop)))),
    };
    let mut client = ClientArgs::new(format!("[::1]:{}", guard.addr.port()));
    client.count = Some(50);
    let report = run_client(&client).expect("client over ::1");
    assert_eq!(report.messages, 50);
}

#[test]
fn connection_refused_names_the_address() {
    let port = closed_port();
    let mut args = client_args(port);
    args.connect_timeout = 0.5;
    args.count = Some(1);
    let err = run_client(&args).expect_err("nothing listens there");
    let text = format!("{err:#}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("could not connect"), "{text}");
}

/// A one-connection server on 127.0.0.1 that echoes `good` messages, then misbehaves.
fn faulty_server(good: usize, corrupt: bool) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind faulty server");
    let addr = listener.local_addr().expect("faulty server address");
    let handle = thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 42];
        for _ in 0..good {
            if conn.read_exact(&mut buf).is_err() || conn.write_all(&buf).is_err() {
                return;
            }
        }
        if corrupt && conn.read_exact(&mut buf).is_ok() {
            buf[10] ^= 0xff;
            let _ = conn.write_all(&buf);
            let _ = conn.read(&mut buf);
        }
    });
    (addr, handle)
}

#[test]
fn server_closing_mid_run_is_an_error() {
    let (addr, handle) = faulty_server(3, false);
    let mut args = client_args(addr.port());
    args.duration = 5.0;
    let err = run_client(&args).expect_err("the server closes after 3 messages");
    handle.join().expect("faulty server thread");
    let text = format!("{err:#}");
    assert!(
        text.contains("closed the connection after 3 messages")
            || text.contains("reset the connection after 3 messages"),
        "{text}"
    );
}

#[test]
fn echo_mismatch_is_an_error() {
    let (addr, handle) = faulty_server(2, true);
    let mut args = client_args(addr.port());
    args.count = Some(10);
    let err = run_client(&args).expect_err("the third echo is corrupted");
    handle.join().expect("faulty server thread");
    let text = format!("{err:#}");
    assert!(text.contains("echo mismatch"), "{text}");
    assert!(text.contains("message 2"), "{text}");
    assert!(text.contains("byte 10"), "{text}");
}
