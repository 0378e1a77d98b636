//! The live stream stays live with batched wakeups: the programs submit records without waking
//! the reader (`BPF_RB_NO_WAKEUP`) until a quarter of the ring waits, so a sparse stream reaches
//! userspace only through the reader's periodic poll. Events of a few echoes must show up while
//! the tracer is still running, not only when it stops.
mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::Topology;

const BIN: &str = env!("CARGO_BIN_EXE_dockertrace");

#[test]
fn sparse_events_stream_while_tracing() {
    if skip!() {
        return;
    }
    let t = Topology::veth();
    let netns = t.a.inode().unwrap().to_string();
    let mut tracer = support::Child::spawn(
        Command::new(BIN)
            .args(["trace", "--netns", &netns, "--json", "-", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Wait for the attach line on stderr.
    let mut err = BufReader::new(tracer.take_stderr());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !line.contains("attached") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "dockertrace trace exited before attaching");
        assert!(Instant::now() < deadline, "no attach line within 30 s");
    }
    let stdout = tracer.take_stdout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // A handful of echoes: a few hundred bytes of records, far below the forced-wakeup mark.
    t.echo(5);
    let first = rx.recv_timeout(Duration::from_secs(2));
    let running = tracer.running();
    tracer.interrupt_and_wait();
    let first = first.expect("no event reached the JSON stream within 2 s while tracing");
    assert!(running, "the tracer stopped before its first event arrived");
    let v: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(v["netns"].as_u64(), Some(u64::from(t.a.inode().unwrap())), "{first}");
}
