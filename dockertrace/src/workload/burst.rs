//! `dockertrace workload burst`: UDP datagrams over loopback at a fixed rate — a synthetic,
//! steady source of kernel network events for measuring how many events per second the tracer
//! sustains without loss (`cargo xtask bench`).
use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use serde::{Deserialize, Serialize};

/// Options of `dockertrace workload burst`.
#[derive(clap::Args, Debug, Clone)]
pub struct BurstArgs {
    /// Datagrams per second to send.
    #[arg(long, value_name = "N")]
    pub rate: u64,
    /// How long to send, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// UDP port on 127.0.0.1 that receives (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Datagram payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Sending threads, each with its own socket and an equal share of the rate (one thread
    /// tops out around 100k datagrams/s on a small machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub senders: u32,
    /// Print the result as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What a burst achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurstReport {
    pub target_rate: u64,
    pub sent: u64,
    pub received: u64,
    pub duration_s: f64,
    /// Datagrams per second actually sent.
    pub rate: f64,
}

impl BurstReport {
    /// The sender kept within 5% of the asked rate.
    pub fn kept_up(&self) -> bool {
        self.rate >= 0.95 * self.target_rate as f64
    }
}

/// Sends `rate` datagrams per second to a receiver in this process for `duration`.
pub fn run_burst(args: &BurstArgs) -> Result<BurstReport> {
    ensure!(args.rate > 0, "--rate must be at least 1 datagram per second");
    let duration = super::seconds("--duration", args.duration)?;
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, args.port))
        .with_context(|| format!("cannot bind UDP port {} on 127.0.0.1", args.port))?;
    rx.set_read_timeout(Some(Duration::from_millis(50)))?;
    ensure!((1..=64).contains(&args.senders), "--senders must be between 1 and 64");
    let to = rx.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let share = args.rate as f64 / args.senders as f64;
    let senders: Vec<_> = (0..args.senders)
        .map(|_| {
            let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a sending socket")?;
            tx.connect(to)?;
            let payload = vec![0x5au8; args.size];
            Ok(std::thread::spawn(move || send_paced(&tx, &payload, share, started, duration)))
        })
        .collect::<Result<_>>()?;
    let sent: u64 = senders.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    let duration_s = started.elapsed().as_secs_f64();
    // Let the receiver drain what is queued.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    Ok(BurstReport {
        target_rate: args.rate,
        sent,
        received: received.load(Ordering::Relaxed),
        duration_s,
        rate: sent as f64 / duration_s,
    })
}

/// Sends `rate` datagrams per second on `tx` from `started` until `duration` has passed;
/// returns how many left.
fn send_paced(tx: &UdpSocket, payload: &[u8], rate: f64, started: Instant, duration: Duration) -> u64 {
    let mut sent = 0u64;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            return sent;
        }
        // Where the schedule says we should be; send in small batches to catch up, sleep when
        // ahead.
        let due = (rate * elapsed.as_secs_f64()) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        for _ in 0..(due - sent).min(64) {
            // A full socket buffer drops the datagram (ENOBUFS/EAGAIN): count only what left.
            if tx.send(payload).is_ok() {
                sent += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_burst_keeps_its_rate_and_arrives() {
        let args = BurstArgs { rate: 2000, duration: 0.5, port: 0, size: 16, senders: 1, json: false };
        let r = run_burst(&args).unwrap();
        assert!((900..=1100).contains(&r.sent), "{r:?}");
        assert!(r.kept_up(), "{r:?}");
        assert_eq!(r.received, r.sent, "loopback loses nothing at this rate: {r:?}");
    }

    #[test]
    fn zero_rate_is_refused() {
        let args = BurstArgs { rate: 0, duration: 0.1, port: 0, size: 16, senders: 1, json: false };
        assert!(run_burst(&args).unwrap_err().to_string().contains("--rate"));
    }
}
