//! The client: opens `--connections` TCP connections, drives the echo or stream pattern on each
//! (one thread per connection, two for stream) and measures the result.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::histogram::Histogram;
use super::report::{RttSummary, WorkloadReport};
use super::server::is_timeout;
use super::target::Target;
use super::{seconds, ClientArgs, Pattern};

/// Largest accepted `--size`.
const MAX_MESSAGE_SIZE: u32 = 16 << 20;
/// Largest accepted `--connections` (each is a thread and a 30 KiB histogram).
const MAX_CONNECTIONS: u32 = 1024;
/// No progress for this long means the server stopped echoing.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between connection attempts while the server is not up yet.
const CONNECT_RETRY: Duration = Duration::from_millis(100);
/// Stream pattern: bytes per write (a whole number of messages) and per read.
const STREAM_CHUNK: usize = 64 * 1024;
/// Stream pattern: how often the reader re-checks whether the writer finished.
const STREAM_POLL: Duration = Duration::from_millis(50);
/// Message filler text (cycled to the message size).
const FILLER: &[u8] = b"dockertrace workload echo message; ";
/// Echo pattern: the first byte of each message cycles through these.
const SEQ_MARKS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// Validated client settings.
#[derive(Debug, Clone)]
struct Plan {
    pattern: Pattern,
    size: usize,
    connections: u32,
    duration: Duration,
    count: Option<u64>,
    warmup: Duration,
    connect_timeout: Duration,
}

impl Plan {
    /// Checks the arguments a user can get wrong.
    fn from_args(args: &ClientArgs) -> Result<Self> {
        if args.size == 0 || args.size > MAX_MESSAGE_SIZE {
            bail!("--size must be between 1 and {MAX_MESSAGE_SIZE} bytes, got {}", args.size);
        }
        if args.connections == 0 || args.connections > MAX_CONNECTIONS {
            bail!("--connections must be between 1 and {MAX_CONNECTIONS}, got {}", args.connections);
        }
        if args.count == Some(0) {
            bail!("--count must be at least 1");
        }
        if let Some(count) = args.count {
            count.checked_mul(u64::from(args.size)).context("--count times --size is too large")?;
        }
        let duration = seconds("--duration", args.duration)?;
        if args.count.is_none() && duration.is_zero() {
            bail!("--duration must be more than 0 seconds");
        }
        Ok(Self {
            pattern: args.pattern,
            size: args.size as usize,
            connections: args.connections,
            duration,
            count: args.count,
            warmup: seconds("--warmup", args.warmup)?,
            connect_timeout: seconds("--connect-timeout", args.connect_timeout)?,
        })
    }
}

/// The measured window, shared by all connections: it starts after the warm-up and ends at
/// `end` (by duration) or when each connection has done its share of `--count`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    measure_start: Instant,
    end: Option<Instant>,
}

/// What one connection measured.
#[derive(Debug, Default)]
struct ConnStats {
    messages: u64,
    bytes: u64,
    /// When this connection's measured window ended.
    window_end: Option<Instant>,
    /// Echo pattern: RTTs in nanoseconds.
    rtt: Option<Histogram>,
}

/// Checks the settings without connecting: [`ClientArgs::validate`].
pub(super) fn validate(args: &ClientArgs) -> Result<()> {
    Plan::from_args(args).map(drop)
}

/// Connects, runs the pattern on every connection and returns the report.
pub fn run_client(args: &ClientArgs) -> Result<WorkloadReport> {
    let plan = Plan::from_args(args)?;
    let target = Target::parse(&args.target)?;
    let streams = (0..plan.connections)
        .map(|_| connect(&target, args.port, plan.connect_timeout))
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let schedule =
        Schedule { measure_start, end: plan.count.is_none().then(|| measure_start + plan.duration) };
    let stats = run_connections(streams, &plan, schedule)?;
    Ok(build_report(&plan, schedule, &stats))
}

/// Connects to the target, retrying until `timeout` (the server may still be starting).
fn connect(target: &Target, default_port: u16, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match try_connect(target, default_port, deadline) {
            Ok(stream) => return configure(stream),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "could not connect to {} within {:.1} s: {error}",
                target.display_with(default_port),
                timeout.as_secs_f64()
            );
        }
        thread::sleep(CONNECT_RETRY.min(deadline - now));
    }
}

/// One attempt over every address the target resolves to.
fn try_connect(target: &Target, default_port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, "the name resolved to no address");
    for addr in target.resolve(default_port)? {
        let left = deadline.saturating_duration_since(Instant::now());
        // A zero connect timeout is invalid; `--connect-timeout 0` means one ordinary attempt.
        let attempt = if left.is_zero() { Duration::from_secs(1) } else { left };
        match TcpStream::connect_timeout(&addr, attempt) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// TCP_NODELAY plus stall timeouts on a fresh connection.
fn configure(stream: TcpStream) -> Result<TcpStream> {
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    stream.set_read_timeout(Some(STALL_TIMEOUT)).context("setting the read timeout")?;
    stream.set_write_timeout(Some(STALL_TIMEOUT)).context("setting the write timeout")?;
    Ok(stream)
}

/// Runs every connection on its own thread; the first failure stops the others.
fn run_connections(streams: Vec<TcpStream>, plan: &Plan, schedule: Schedule) -> Result<Vec<ConnStats>> {
    let abort = AtomicBool::new(false);
    let results: Vec<Result<ConnStats>> = thread::scope(|scope| {
        let handles: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(index, stream)| {
                let quota = plan.count.map(|c| share(c, plan.connections, index));
                let abort = &abort;
                scope.spawn(move || {
                    let result = run_connection(stream, plan, schedule, quota, abort);
                    if result.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a client connection thread panicked"))))
            .collect()
    });
    results.into_iter().collect()
}

/// Connection `index`'s part of `count` messages split over `connections`.
fn share(count: u64, connections: u32, index: usize) -> u64 {
    let n = u64::from(connections);
    count / n + u64::from((index as u64) < count % n)
}

/// Runs the chosen pattern on one connection.
fn run_connection(
    stream: TcpStream,
    plan: &Plan,
    schedule: Schedule,
    quota: Option<u64>,
    abort: &AtomicBool,
) -> Result<ConnStats> {
    let peer = stream.peer_addr().context("reading the server address")?;
    let conn = Connection { peer, size: plan.size, schedule, quota, abort };
    match plan.pattern {
        Pattern::Echo => conn.echo(stream),
        Pattern::Stream => conn.stream(stream),
    }
}

/// One connection's settings.
struct Connection<'a> {
    peer: SocketAddr,
    size: usize,
    schedule: Schedule,
    /// Messages to measure (by `--count`); `None` when running by duration.
    quota: Option<u64>,
    abort: &'a AtomicBool,
}

impl Connection<'_> {
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Echo pattern: one message outstanding, each round trip timed.
    fn echo(&self, mut stream: TcpStream) -> Result<ConnStats> {
        let mut message = make_message(self.size);
        let mut echo = vec![0u8; self.size];
        let mut rtt = Histogram::new();
        let mut stats = ConnStats::default();
        let mut sent: u64 = 0;
        while self.quota != Some(stats.messages) && !self.aborted() {
            let t0 = Instant::now();
            if self.schedule.end.is_some_and(|end| t0 >= end) {
                break;
            }
            message[0] = SEQ_MARKS[(sent % SEQ_MARKS.len() as u64) as usize];
            stream.write_all(&message).map_err(|e| self.io_failure(e, sent))?;
            stream.read_exact(&mut echo).map_err(|e| self.io_failure(e, sent))?;
            let t1 = Instant::now();
            if echo != message {
                bail!(self.mismatch(&echo, &message, sent));
            }
            sent += 1;
            if t0 >= self.schedule.measure_start {
                rtt.record(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                stats.messages += 1;
                stats.window_end = Some(t1);
            }
        }
        stats.bytes = stats.messages * self.size as u64;
        stats.rtt = Some(rtt);
        Ok(stats)
    }

    /// Stream pattern: this thread writes continuously while a second one drains the echo.
    fn stream(&self, stream: TcpStream) -> Result<ConnStats> {
        let reader_stream = stream.try_clone().context("cloning the client socket")?;
        let progress = StreamProgress::default();
        let pattern = make_batch(self.size);
        let (written, read) = thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let result = self.drain(&reader_stream, &pattern, &progress);
                if result.is_err() && !progress.writer_failed.load(Ordering::Acquire) {
                    progress.reader_failed.store(true, Ordering::Release);
                    // Unblock the writer.
                    let _ = reader_stream.shutdown(Shutdown::Both);
                }
                result
            });
            let written = self.pour(&stream, &pattern, &progress);
            progress.writer_done.store(true, Ordering::Release);
            if written.is_err() {
                progress.writer_failed.store(true, Ordering::Release);
                // Unblock the reader.
                let _ = stream.shutdown(Shutdown::Both);
            }
            let read = reader.join().unwrap_or_else(|_| Err(anyhow!("the stream reader thread panicked")));
            (written, read)
        });
        // Whoever failed first shut the socket down under the other: report the cause.
        let mut stats = match (read, written) {
            (Err(e), _) if progress.reader_failed.load(Ordering::Acquire) => return Err(e),
            (_, Err(e)) => return Err(e),
            (read, Ok(())) => read?,
        };
        if self.quota.is_some() {
            stats.bytes = stats.bytes.saturating_sub(progress.warmup_bytes.load(Ordering::Acquire));
        }
        stats.messages = stats.bytes / self.size as u64;
        Ok(stats)
    }

    /// Stream writer: warm-up, then `quota` messages or until the end; then half-closes.
    fn pour(&self, stream: &TcpStream, batch: &[u8], progress: &StreamProgress) -> Result<()> {
        let mut out = stream;
        let mut written = 0u64;
        let mut send = |chunk: &[u8]| -> Result<()> {
            out.write_all(chunk).map_err(|e| self.io_failure(e, written / self.size as u64))?;
            written += chunk.len() as u64;
            progress.written.store(written, Ordering::Release);
            Ok(())
        };
        while Instant::now() < self.schedule.measure_start && !self.aborted() {
            send(batch)?;
        }
        progress.warmup_bytes.store(progress.written.load(Ordering::Acquire), Ordering::Release);
        match self.quota {
            Some(quota) => {
                let mut left = quota * self.size as u64;
                while left > 0 && !self.aborted() {
                    let n = left.min(batch.len() as u64) as usize;
                    send(&batch[..n])?;
                    left -= n as u64;
                }
            }
            None => {
                let end = self.schedule.end.unwrap_or(self.schedule.measure_start);
                while Instant::now() < end && !self.aborted() {
                    send(batch)?;
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        Ok(())
    }

    /// Stream reader: verifies and counts the echo until everything written came back.
    fn drain(&self, stream: &TcpStream, pattern: &[u8], progress: &StreamProgress) -> Result<ConnStats> {
        stream.set_read_timeout(Some(STREAM_POLL)).context("setting the read timeout")?;
        let mut input = stream;
        let mut buf = vec![0u8; STREAM_CHUNK];
        let mut total = 0u64;
        let mut stats = ConnStats::default();
        let mut last_progress = Instant::now();
        loop {
            match input.read(&mut buf) {
                Ok(0) if progress.complete(total) || self.aborted() => break,
                Ok(0) => bail!("server {} closed the connection after echoing {total} bytes", self.peer),
                Ok(n) => {
                    if let Some(at) = first_difference(&buf[..n], pattern, total) {
                        bail!("echo mismatch from {}: stream byte {} differs", self.peer, total + at as u64);
                    }
                    total += n as u64;
                    last_progress = Instant::now();
                    self.count_stream_bytes(&mut stats, n, last_progress);
                    if progress.complete(total) {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if progress.complete(total) || self.aborted() {
                        break;
                    }
                    if last_progress.elapsed() >= STALL_TIMEOUT {
                        bail!("no echo from {} for {} s", self.peer, STALL_TIMEOUT.as_secs());
                    }
                }
                Err(e) => return Err(self.io_failure(e, total / self.size as u64)),
            }
        }
        Ok(stats)
    }

    /// Adds `n` echoed bytes that arrived at `now` to the measured window.
    fn count_stream_bytes(&self, stats: &mut ConnStats, n: usize, now: Instant) {
        match self.schedule.end {
            // By duration: count what arrived inside the window; the window is the nominal one.
            Some(end) => {
                if now >= self.schedule.measure_start && now <= end {
                    stats.bytes += n as u64;
                }
                stats.window_end = Some(end);
            }
            // By count: everything counts (the warm-up is subtracted at the end).
            None => {
                stats.bytes += n as u64;
                stats.window_end = Some(now);
            }
        }
    }

    /// A one-line error for a failed send/receive after `done` messages.
    fn io_failure(&self, e: io::Error, done: u64) -> anyhow::Error {
        let peer = self.peer;
        match e.kind() {
            ErrorKind::UnexpectedEof => {
                anyhow!("server {peer} closed the connection after {done} messages")
            }
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
                anyhow!("server {peer} reset the connection after {done} messages")
            }
            _ if is_timeout(&e) => {
                anyhow!("no echo from {peer} for {} s", STALL_TIMEOUT.as_secs())
            }
            _ => anyhow!("connection to {peer} failed after {done} messages: {e}"),
        }
    }

    /// The error for an echo that differs from what was sent.
    fn mismatch(&self, got: &[u8], sent: &[u8], index: u64) -> anyhow::Error {
        let at = first_difference(got, sent, 0).unwrap_or(0);
        anyhow!("echo mismatch from {}: message {index} came back different at byte {at}", self.peer)
    }
}

/// Shared between a stream connection's writer and reader.
#[derive(Debug, Default)]
struct StreamProgress {
    /// Bytes written so far.
    written: AtomicU64,
    /// Bytes written during the warm-up.
    warmup_bytes: AtomicU64,
    /// Set once the writer will write no more.
    writer_done: AtomicBool,
    /// Set when the reader failed first (and shut the socket down under the writer).
    reader_failed: AtomicBool,
    /// Set when the writer failed first (and shut the socket down under the reader).
    writer_failed: AtomicBool,
}

impl StreamProgress {
    /// Whether every written byte has been echoed back.
    fn complete(&self, received: u64) -> bool {
        self.writer_done.load(Ordering::Acquire) && received >= self.written.load(Ordering::Acquire)
    }
}

/// One message of `size` bytes: the filler text, cycled.
fn make_message(size: usize) -> Vec<u8> {
    FILLER.iter().copied().cycle().take(size).collect()
}

/// Stream pattern: whole messages back to back, about `STREAM_CHUNK` bytes.
fn make_batch(size: usize) -> Vec<u8> {
    make_message(size).repeat((STREAM_CHUNK / size).max(1))
}

/// Where `chunk`, found at stream offset `offset`, first differs from the cyclic `pattern`.
fn first_difference(chunk: &[u8], pattern: &[u8], offset: u64) -> Option<usize> {
    let mut phase = (offset % pattern.len() as u64) as usize;
    let mut done = 0;
    while done < chunk.len() {
        let take = (pattern.len() - phase).min(chunk.len() - done);
        let (got, want) = (&chunk[done..done + take], &pattern[phase..phase + take]);
        if got != want {
            return got.iter().zip(want).position(|(a, b)| a != b).map(|i| done + i);
        }
        done += take;
        phase = 0;
    }
    None
}

/// Sums the connections into the report.
fn build_report(plan: &Plan, schedule: Schedule, stats: &[ConnStats]) -> WorkloadReport {
    let messages = stats.iter().map(|s| s.messages).sum();
    let bytes = stats.iter().map(|s| s.bytes).sum();
    let duration_s = stats
        .iter()
        .filter_map(|s| s.window_end)
        .max()
        .map_or(0.0, |end| end.saturating_duration_since(schedule.measure_start).as_secs_f64());
    let rtt = match plan.pattern {
        Pattern::Echo => {
            let mut all = Histogram::new();
            stats.iter().filter_map(|s| s.rtt.as_ref()).for_each(|h| all.merge(h));
            RttSummary::from_nanos(&all)
        }
        Pattern::Stream => None,
    };
    WorkloadReport::new(plan.pattern, plan.connections, plan.size as u32, messages, bytes, duration_s, rtt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ClientArgs {
        let mut argv = vec!["client", "127.0.0.1"];
        argv.extend_from_slice(extra);
        super::super::tests::parse_client(&argv).unwrap()
    }

    fn plan_error(extra: &[&str]) -> String {
        format!("{:#}", Plan::from_args(&args(extra)).unwrap_err())
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(plan_error(&["--size", "0"]).contains("--size"));
        assert!(plan_error(&["--connections", "0"]).contains("--connections"));
        assert!(plan_error(&["--count", "0"]).contains("--count"));
        assert!(plan_error(&["--duration", "0"]).contains("--duration"));
        assert!(plan_error(&["--duration=-1"]).contains("--duration"));
        assert!(plan_error(&["--warmup", "NaN"]).contains("--warmup"));
        assert!(plan_error(&["--connect-timeout=-3"]).contains("--connect-timeout"));
        assert!(plan_error(&["--size", "1000000000"]).contains("between 1 and 16777216 bytes"));
        assert!(plan_error(&["--connections", "5000"]).contains("between 1 and 1024"));
        assert!(plan_error(&["--duration", "1e300"]).contains("--duration"));
        let e = format!("{:#}", args(&["--size", "1000000000"]).validate().unwrap_err());
        assert_eq!(e, plan_error(&["--size", "1000000000"]), "validate() is the client's own check");
        assert!(args(&["--size", "16777216", "--connections", "1024"]).validate().is_ok());
    }

    #[test]
    fn count_replaces_duration() {
        let plan = Plan::from_args(&args(&["--count", "10"])).unwrap();
        assert_eq!(plan.count, Some(10));
    }

    #[test]
    fn count_is_split_exactly() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!((0..4).map(|i| share(2, 4, i)).sum::<u64>(), 2);
    }

    #[test]
    fn messages_have_the_requested_size() {
        assert_eq!(make_message(42).len(), 42);
        assert_eq!(make_message(1).len(), 1);
        assert_eq!(make_message(1000).len(), 1000);
        let batch = make_batch(42);
        assert_eq!(batch.len() % 42, 0);
        assert!(batch.len() <= STREAM_CHUNK);
        assert_eq!(make_batch(100_000).len(), 100_000);
    }

    #[test]
    fn cyclic_comparison() {
        let pattern = b"abcd";
        assert_eq!(first_difference(b"cdabcdab", pattern, 2), None);
        assert_eq!(first_difference(b"cdabXdab", pattern, 2), Some(4));
        assert_eq!(first_difference(b"", pattern, 3), None);
        assert_eq!(first_difference(b"dab", pattern, 7), None);
    }
}
