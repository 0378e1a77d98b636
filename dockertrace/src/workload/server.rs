//! The echo server: accepts connections and echoes every byte back, a thread per connection.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::{seconds, ServerArgs};

/// How often a stoppable server checks its stop flag and deadline.
const POLL: Duration = Duration::from_millis(50);
/// Read buffer per connection; echoes go back in whatever pieces arrive.
const BUFFER: usize = 64 * 1024;

/// A bound, not yet serving, echo server (lets callers learn the port when `--port 0`).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    duration: Option<Duration>,
    quiet: bool,
}

/// Binds the listening socket described by `args`.
pub fn bind_server(args: &ServerArgs) -> Result<Server> {
    let duration = args.duration.map(|secs| seconds("--duration", secs)).transpose()?;
    let addr = SocketAddr::new(args.listen, args.port);
    let listener = TcpListener::bind(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))?;
    Ok(Server { listener, duration, quiet: args.quiet })
}

/// Binds and serves until `--duration` passes or `stop` is set (forever when neither).
pub fn run_server(args: &ServerArgs, stop: Option<Arc<AtomicBool>>) -> Result<()> {
    bind_server(args)?.serve(stop)
}

/// When the server should stop: an external flag and/or a deadline.
struct StopCondition {
    flag: Option<Arc<AtomicBool>>,
    deadline: Option<Instant>,
}

impl StopCondition {
    /// Whether anything can stop the server (otherwise it blocks without polling).
    fn is_active(&self) -> bool {
        self.flag.is_some() || self.deadline.is_some()
    }

    /// Whether it is time to stop.
    fn reached(&self) -> bool {
        self.flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl Server {
    /// The address actually bound (with the real port when `--port 0` was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and echoes until the stop flag is set or `--duration` passes, then waits for
    /// the connection threads (which notice the stop within a poll interval).
    pub fn serve(self, stop: Option<Arc<AtomicBool>>) -> Result<()> {
        let addr = self.local_addr().context("reading the listening address")?;
        let condition = StopCondition { flag: stop, deadline: self.duration.map(|d| Instant::now() + d) };
        // Connection threads watch this flag only when the server can stop at all, so an
        // unbounded server never wakes up on timers (quieter kernel traces).
        let stopping = condition.is_active().then(|| Arc::new(AtomicBool::new(false)));
        self.listener.set_nonblocking(condition.is_active()).context("configuring the listening socket")?;
        self.log(format_args!("listening on {addr}"));
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        let mut accepted = 0u64;
        while !condition.reached() {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    accepted += 1;
                    self.log(format_args!("connection from {peer}"));
                    self.spawn_worker(stream, peer, stopping.clone(), &mut workers);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => {
                    eprintln!("workload server: accept failed: {e}");
                    thread::sleep(POLL);
                }
            }
            workers.retain(|w| !w.is_finished());
        }
        if let Some(flag) = &stopping {
            flag.store(true, Ordering::Relaxed);
        }
        for worker in workers {
            let _ = worker.join();
        }
        self.log(format_args!("stopped after {accepted} connection(s)"));
        Ok(())
    }

    /// Starts the echo thread for one connection.
    fn spawn_worker(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        stopping: Option<Arc<AtomicBool>>,
        workers: &mut Vec<JoinHandle<()>>,
    ) {
        let quiet = self.quiet;
        let spawned = thread::Builder::new().name("echo-conn".into()).spawn(move || {
            let outcome = echo_until_eof(stream, stopping.as_deref());
            if !quiet {
                match outcome {
                    Ok(bytes) => {
                        eprintln!("workload server: {peer} closed after {bytes} bytes")
                    }
                    Err(e) => eprintln!("workload server: {peer}: {e}"),
                }
            }
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => eprintln!("workload server: cannot start a thread for {peer}: {e}"),
        }
    }

    /// Prints a status line on stderr unless `--quiet`.
    fn log(&self, message: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("workload server: {message}");
        }
    }
}

/// Accept errors caused by one client that should not disturb the loop.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}

/// Whether an I/O error is a socket timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO` expiring).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Echoes everything that arrives, as it arrives, until the peer closes its side.
/// Returns the number of bytes echoed.
fn echo_until_eof(mut stream: TcpStream, stopping: Option<&AtomicBool>) -> io::Result<u64> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    if stopping.is_some() {
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(POLL))?;
    }
    let stopped = || stopping.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut buf = vec![0u8; BUFFER];
    let mut echoed = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(echoed),
            Ok(n) => {
                if !write_fully(&mut stream, &buf[..n], &stopped)? {
                    return Ok(echoed);
                }
                echoed += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                if stopped() {
                    return Ok(echoed);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data`, retrying after write timeouts; `Ok(false)` when stopped first.
fn write_fully(stream: &mut TcpStream, mut data: &[u8], stopped: &dyn Fn() -> bool) -> io::Result<bool> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "peer stopped reading")),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                if stopped() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
