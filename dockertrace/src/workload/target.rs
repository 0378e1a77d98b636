//! Parsing the client's TARGET argument (`HOST`, `HOST:PORT`, `[IPV6]:PORT`, `172.17.0.2/16`).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};

/// Where the client connects: a host (IP literal or name) and maybe an explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// IP address or host name, without brackets.
    pub host: String,
    /// Port given in the target itself; when absent the client's `--port` applies.
    pub port: Option<u16>,
}

impl Target {
    /// Parses `HOST`, `HOST:PORT`, `IPV6`, `[IPV6]` or `[IPV6]:PORT`.
    ///
    /// A trailing `/PREFIX` is dropped, so the study's `python client.py 172.17.0.2/16` form
    /// (an address copied from `ip addr`) works unchanged.
    pub fn parse(input: &str) -> Result<Self> {
        let trimmed = input.trim();
        let invalid = |e: anyhow::Error| anyhow!("invalid target {input:?}: {e:#}");
        let text = strip_prefix_length(trimmed).map_err(invalid)?;
        let (host, port) = split_host_port(text).map_err(invalid)?;
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            bail!("invalid target {input:?}: expected HOST, HOST:PORT or [IPV6]:PORT");
        }
        Ok(Self { host: host.to_owned(), port })
    }

    /// The port to use: the target's own, else `default_port`.
    pub fn port_or(&self, default_port: u16) -> u16 {
        self.port.unwrap_or(default_port)
    }

    /// Resolves to socket addresses (IP literals need no lookup).
    pub fn resolve(&self, default_port: u16) -> io::Result<Vec<SocketAddr>> {
        let port = self.port_or(default_port);
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        Ok((self.host.as_str(), port).to_socket_addrs()?.collect())
    }

    /// `host:port` (IPv6 in brackets) for messages.
    pub fn display_with(&self, default_port: u16) -> String {
        let port = self.port_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => f.write_str(&self.display_with(port)),
            None if self.host.contains(':') => write!(f, "[{}]", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// Drops a CIDR-style `/NN` suffix.
fn strip_prefix_length(text: &str) -> Result<&str> {
    match text.rsplit_once('/') {
        None => Ok(text),
        Some((address, prefix))
            if !prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(address)
        }
        Some((_, prefix)) => Err(anyhow!("{prefix:?} is not a prefix length")),
    }
}

/// Splits host and optional port, handling bracketed and bare IPv6 literals.
fn split_host_port(text: &str) -> Result<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("missing ']'")?;
        host.parse::<Ipv6Addr>().with_context(|| format!("{host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':').context("expected ':PORT' after ']'")?)?),
        };
        return Ok((host, port));
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, port) = text.split_once(':').context("expected HOST:PORT")?;
            Ok((host, Some(parse_port(port)?)))
        }
        _ => {
            text.parse::<Ipv6Addr>()
                .with_context(|| format!("{text:?} is not an IPv6 address (use [IPV6]:PORT)"))?;
            Ok((text, None))
        }
    }
}

/// Parses a TCP port number.
fn parse_port(text: &str) -> Result<u16> {
    text.parse::<u16>().map_err(|_| anyhow!("{text:?} is not a port number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (String, Option<u16>) {
        let t = Target::parse(s).unwrap();
        (t.host, t.port)
    }

    #[test]
    fn plain_ipv4() {
        assert_eq!(parsed("127.0.0.1"), ("127.0.0.1".into(), None));
    }

    #[test]
    fn study_prefix_form_is_stripped() {
        assert_eq!(parsed("172.17.0.2/16"), ("172.17.0.2".into(), None));
        assert_eq!(parsed("fd00::2/64"), ("fd00::2".into(), None));
    }

    #[test]
    fn host_and_port() {
        assert_eq!(parsed("127.0.0.1:10000"), ("127.0.0.1".into(), Some(10000)));
        assert_eq!(parsed("server:8080"), ("server".into(), Some(8080)));
        assert_eq!(parsed("localhost"), ("localhost".into(), None));
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(parsed("[::1]:10000"), ("::1".into(), Some(10000)));
        assert_eq!(parsed("[::1]"), ("::1".into(), None));
        assert_eq!(parsed("::1"), ("::1".into(), None));
        assert_eq!(parsed("fe80::1"), ("fe80::1".into(), None));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "  ",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "host:port",
            "[::1",
            "[nothost]:1",
            "a:b:c",
            "1.2.3.4/x",
            "[::1]x",
            "a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = Target::parse("1.2.3.4:99999").unwrap_err().to_string();
        assert!(err.contains("1.2.3.4:99999"), "{err}");
        assert!(err.contains("not a port number"), "{err}");
    }

    #[test]
    fn display_and_resolve() {
        let t = Target::parse("[::1]:7").unwrap();
        assert_eq!(t.display_with(10000), "[::1]:7");
        assert_eq!(t.to_string(), "[::1]:7");
        let t = Target::parse("127.0.0.1").unwrap();
        assert_eq!(t.display_with(10000), "127.0.0.1:10000");
        let addrs = t.resolve(10000).unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:10000".parse::<SocketAddr>().unwrap()]);
    }
}
