//! Kernel strings are untrusted: any process can name itself with terminal escape sequences.
//! A sender named `\x1b[31mEVIL\x1b[0m` drives traffic through a veth pair while the real
//! binary traces it: its name must reach the terminal escaped (`\x1b`), never raw, in the live
//! stream and the summary; JSON keeps it as an escaped string.
mod support;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dockertrace::{
    sys::netns,
    workload::{self, ClientArgs},
};
use support::{EchoServer, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_dockertrace");
/// 14 bytes: fits a task name (15 + NUL).
const EVIL: &[u8] = b"\x1b[31mEVIL\x1b[0m";

/// `n` echoes from `t.a` to `t.b`, sent by a thread named [`EVIL`].
fn evil_echo(t: &Topology, n: u64) {
    let server = EchoServer::start_in(Some(&t.b.path()), "0.0.0.0");
    let mut args = ClientArgs::new(t.b_ip);
    args.port = server.addr.port();
    args.count = Some(n);
    netns::run_in(&t.a.path(), move || {
        let mut name = [0u8; 16];
        name[..EVIL.len()].copy_from_slice(EVIL);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME): {}", std::io::Error::last_os_error());
        workload::run_client(&args)
    })
    .unwrap()
    .unwrap();
}

/// Runs `dockertrace trace` on `t.a`'s namespace with `extra` arguments during an evil echo;
/// returns (stdout, stderr).
fn trace_evil(t: &Topology, extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let netns = t.a.inode().unwrap().to_string();
    let mut tracer = support::Child::spawn(
        Command::new(BIN)
            .args(["trace", "--netns", &netns, "--rate", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut err = BufReader::new(tracer.take_stderr());
    let mut stderr = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&stderr).contains("attached") {
        assert!(err.read_until(b'\n', &mut stderr).unwrap() > 0, "dockertrace exited before attaching");
        assert!(Instant::now() < deadline, "no attach line within 30 s");
    }
    let mut out = tracer.take_stdout();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).map(|_| v)
    });
    evil_echo(t, 20);
    // Let the reader's 20 ms poll take the last records.
    std::thread::sleep(Duration::from_millis(200));
    tracer.interrupt_and_wait();
    err.read_to_end(&mut stderr).unwrap();
    (reader.join().unwrap().unwrap(), stderr)
}

#[test]
fn task_names_with_escape_sequences_reach_the_terminal_escaped() {
    if skip!() {
        return;
    }
    let t = Topology::veth();
    let (stdout, stderr) = trace_evil(&t, &[]);
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains(r"\x1b[31mEVIL\x1b[0m"), "the sender's name, escaped, in the live stream:\n{text}");
    for (what, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
        let raw = bytes.windows(EVIL.len()).filter(|w| *w == EVIL).count();
        assert_eq!(raw, 0, "{what} carries the raw name {raw} times");
        assert!(!bytes.contains(&0x1b), "{what} has an ESC byte (piped output is never colored)");
    }
}

#[test]
fn task_names_with_escape_sequences_stay_escaped_in_json() {
    if skip!() {
        return;
    }
    let t = Topology::veth();
    let (stdout, _) = trace_evil(&t, &["--json", "-"]);
    assert!(!stdout.contains(&0x1b), "raw ESC in JSON");
    let evil = String::from_utf8(EVIL.to_vec()).unwrap();
    let named = String::from_utf8_lossy(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["comm"].as_str() == Some(evil.as_str()))
        .count();
    assert!(named > 0, "no JSON event names the sender (its comm decodes back to the raw bytes)");
}
