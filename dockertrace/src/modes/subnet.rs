//! The default addressing of the macvlan/ipvlan (and netns bridge) networks, when the user
//! gives no `--subnet`/`--gateway`: a free private /24, the same way for every runtime.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::Addressing;

/// No /24 of 10.213.0.0/16 is free.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free private subnet found in 10.213.0.0/16; pass --subnet and --gateway")]
pub struct NoSubnet;

/// IPv4 routes of the host (destination networks), from /proc/net/route.
fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&text)
}

/// The destination networks of `/proc/net/route` (the default route left out).
fn parse_routes(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let addr = Ipv4Addr::from(u32::from_be(dest));
            let prefix = u32::from_be(mask).leading_ones() as u8;
            Ipv4Net::new(addr, prefix).ok()
        })
        .filter(|n| n.prefix_len() > 0)
        .collect()
}

/// A /24 in 10.213.0.0/16 that no host route (and nothing in `taken`) overlaps, chosen from
/// the run id so concurrent runs rarely collide.
pub fn pick_subnet(run_id: &str, taken: &[IpNet]) -> Result<Ipv4Net, NoSubnet> {
    pick_subnet_avoiding(run_id, &host_routes(), taken)
}

fn pick_subnet_avoiding(run_id: &str, routes: &[Ipv4Net], taken: &[IpNet]) -> Result<Ipv4Net, NoSubnet> {
    let seed = run_id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    (0..254u32)
        .map(|i| (seed.wrapping_add(i) % 254 + 1) as u8)
        .map(|x| Ipv4Net::new(Ipv4Addr::new(10, 213, x, 0), 24).expect("valid /24"))
        .find(|n| {
            !routes.iter().any(|r| overlaps(r, n))
                && !taken.iter().any(|t| matches!(t, IpNet::V4(t) if overlaps(t, n)))
        })
        .ok_or(NoSubnet)
}

/// The addressing a run gets without `--subnet`/`--gateway`: [`pick_subnet`], its first host
/// as the gateway (as Docker's IPAM does); server and client addresses are left to the
/// runtime (Docker's IPAM, or the next free hosts).
pub fn default_addressing(run_id: &str) -> Result<Addressing, NoSubnet> {
    let net = pick_subnet(run_id, &[])?;
    let gateway = net.hosts().next().ok_or(NoSubnet)?;
    Ok(Addressing { subnet: IpNet::V4(net), gateway: IpAddr::V4(gateway), server: None, client: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_subnet_outside_taken_ones() {
        let first = pick_subnet("abc", &[]).unwrap();
        let second = pick_subnet("abc", &[IpNet::V4(first)]).unwrap();
        assert_ne!(first, second);
        assert!(second.to_string().starts_with("10.213."));
        assert_eq!(second.prefix_len(), 24);
    }

    #[test]
    fn host_routes_are_avoided() {
        let routes = parse_routes(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
             eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n\
             br0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\n",
        );
        assert_eq!(
            routes,
            vec!["10.213.0.0/16".parse::<Ipv4Net>().unwrap()],
            "the default route is left out"
        );
        assert_eq!(pick_subnet_avoiding("abc", &routes, &[]), Err(NoSubnet));
    }

    #[test]
    fn the_default_gateway_is_the_first_host() {
        let a = default_addressing("0a1b2c3d").unwrap();
        let IpNet::V4(net) = a.subnet else { panic!("IPv4") };
        assert_eq!(a.gateway, IpAddr::V4(net.hosts().next().unwrap()));
        assert_eq!((a.server, a.client), (None, None));
        assert!(a.subnet.to_string().starts_with("10.213."));
    }
}
