//! `--inject FAULT`: reproduces a known trap on purpose, in the run's own topology, so that a
//! user sees what its drop looks like (docs/drops.md). A fault only ever touches what the run
//! created: its own namespaces (netns runtime), its own containers' devices and a DOCKER-USER
//! rule that matches only the run's own addresses on its bridge (Docker runtime, removed at
//! teardown). A fault that does not fit the mode is refused before anything is created.
use std::{fmt, net::IpAddr};

use super::{Mode, RuntimeKind};

/// The faults `--inject` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// A DROP rule for the run's traffic on its bridge (FORWARD → DOCKER-USER): bridge and
    /// bridge-user.
    ForwardDrop,
    /// The client connects to a port nobody listens on.
    ClosedPort,
    /// The macvlan parent's side talks to a macvlan child (bridge-mode isolation): macvlan,
    /// netns runtime.
    MacvlanParent,
    /// An MTU below the message on the server's bridge port (the frames cannot be forwarded):
    /// bridge and bridge-user.
    Mtu,
}

/// The MTU the `mtu` fault sets on the server's bridge port.
pub const FAULT_MTU: u32 = 1000;
/// The smallest message the `mtu` fault sends: one TCP segment larger than [`FAULT_MTU`].
pub const FAULT_MTU_MESSAGE: u32 = 1400;
/// How long an injected run's client keeps trying to connect (the fault may keep it from ever
/// connecting).
pub const FAULT_CONNECT_TIMEOUT: f64 = 4.0;

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::ForwardDrop => "forward-drop",
            Fault::ClosedPort => "closed-port",
            Fault::MacvlanParent => "macvlan-parent",
            Fault::Mtu => "mtu",
        }
    }

    /// What the fault does, in one line (the run's notes).
    pub fn describe(self) -> &'static str {
        match self {
            Fault::ForwardDrop => {
                "a DROP rule for the client's traffic to the server in DOCKER-USER (FORWARD)"
            }
            Fault::ClosedPort => "the client connects to a port no server listens on",
            Fault::MacvlanParent => {
                "the client runs on the macvlan parent's side and talks to a macvlan child"
            }
            Fault::Mtu => "the server's bridge port gets an MTU below the message size",
        }
    }

    /// Whether the fault fits `mode` on `runtime`: the one line that says why not.
    pub fn check(self, mode: Mode, runtime: RuntimeKind) -> Result<(), String> {
        let bridged = matches!(mode, Mode::Bridge | Mode::BridgeUser);
        let refuse = |why: &str| Err(format!("--inject {} does not fit --mode {mode}: {why}", self.name()));
        match self {
            Fault::ForwardDrop | Fault::Mtu if !bridged => {
                refuse("it needs a bridge (--mode bridge or bridge-user)")
            }
            Fault::ClosedPort if mode.over_loopback() && runtime == RuntimeKind::Docker => refuse(
                "on the machine's own loopback a port without a listener cannot be guaranteed; use --runtime netns",
            ),
            Fault::MacvlanParent if mode != Mode::Macvlan => refuse("it needs --mode macvlan"),
            Fault::MacvlanParent if runtime == RuntimeKind::Docker => refuse(
                "with Docker the parent side is the machine's own namespace; use --runtime netns, whose parent is isolated",
            ),
            _ => Ok(()),
        }
    }

    /// A port the fault's client targets instead of the server's (`closed-port`).
    pub fn client_port(self, port: u16) -> Option<u16> {
        (self == Fault::ClosedPort).then(|| if port == u16::MAX { port - 1 } else { port + 1 })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `forward-drop` rule (for DOCKER-USER, after `-I DOCKER-USER 1`): the client's TCP to
/// the server's `port`, bridged through `bridge`, is dropped. Both runtimes insert it; the
/// Docker runtime's, in the host's own DOCKER-USER, carries `tag` as an iptables comment
/// (`dockertrace run=… pid=… start=…`, like a link's alias): what `cleanup` and the next run
/// look for when a killed run left it ([`super::leftovers`]).
pub fn forward_drop_rule(
    bridge: &str,
    client: IpAddr,
    server: IpAddr,
    port: u16,
    tag: Option<&str>,
) -> Vec<String> {
    let (src, dst) = (format!("{client}/32"), format!("{server}/32"));
    let port = port.to_string();
    let mut rule: Vec<String> =
        ["-i", bridge, "-o", bridge, "-s", &src, "-d", &dst, "-p", "tcp", "--dport", &port]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    if let Some(tag) = tag {
        rule.extend(["-m", "comment", "--comment", tag].map(str::to_owned));
    }
    rule.extend(["-j", "DROP"].map(str::to_owned));
    rule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fit_their_modes_only() {
        use RuntimeKind::{Docker, Netns};
        assert_eq!(Fault::ForwardDrop.check(Mode::Bridge, Docker), Ok(()));
        assert_eq!(Fault::ForwardDrop.check(Mode::BridgeUser, Netns), Ok(()));
        let e = Fault::ForwardDrop.check(Mode::Macvlan, Netns).unwrap_err();
        assert_eq!(e, "--inject forward-drop does not fit --mode macvlan: it needs a bridge (--mode bridge or bridge-user)");
        assert!(Fault::Mtu.check(Mode::Normal, Netns).is_err());
        assert_eq!(Fault::ClosedPort.check(Mode::Normal, Netns), Ok(()));
        assert!(Fault::ClosedPort.check(Mode::Host, Docker).unwrap_err().contains("--runtime netns"));
        assert_eq!(Fault::ClosedPort.check(Mode::Macvlan, Docker), Ok(()));
        assert_eq!(Fault::MacvlanParent.check(Mode::Macvlan, Netns), Ok(()));
        assert!(Fault::MacvlanParent.check(Mode::Macvlan, Docker).is_err());
        assert!(Fault::MacvlanParent.check(Mode::Bridge, Netns).is_err());
        assert_eq!(Fault::ClosedPort.client_port(10000), Some(10001));
        assert_eq!(Fault::ClosedPort.client_port(u16::MAX), Some(u16::MAX - 1));
        assert_eq!(Fault::Mtu.client_port(10000), None);
    }
}
