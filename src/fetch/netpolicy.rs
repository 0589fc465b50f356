//! Which IP addresses the fetcher may contact: the SSRF guard applied to every resolved or literal address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Decides whether an upstream IP address may be contacted.
///
/// By default everything that is not a public unicast address is refused, so a URL cannot make the proxy talk
/// to itself, the local network or a cloud metadata endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Allow every address, including loopback and private ranges (for trusted deployments and tests).
    pub allow_private: bool,
    /// Ranges that are allowed even though they would otherwise be refused (e.g. an internal image host).
    pub allow_nets: Vec<IpNet>,
}

/// An address the policy refuses, with the reason it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target address {ip} is forbidden ({reason})")]
pub struct ForbiddenAddress {
    /// The address that was refused, as resolved or written in the URL.
    pub ip: IpAddr,
    /// A short, public-safe name of the range it falls in, such as "loopback".
    pub reason: &'static str,
}

impl NetworkPolicy {
    /// Checks one address; `Err` names the range that makes it forbidden.
    pub fn check(&self, ip: IpAddr) -> Result<(), ForbiddenAddress> {
        if self.allow_private {
            return Ok(());
        }
        // An allow-listed range wins; the embedded IPv4 of a mapped address counts too, so allowing 127.0.0.0/8
        // also allows ::ffff:127.0.0.1, which the OS routes to the very same place.
        let embedded = embedded_ipv4(ip).map(IpAddr::V4);
        if self.allow_nets.iter().any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4))) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            None => Ok(()),
            Some(reason) => Err(ForbiddenAddress { ip, reason }),
        }
    }
}

/// The reason an address is refused by default, or `None` for a public unicast address.
fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => ipv4_reason(v4),
        IpAddr::V6(v6) => ipv6_reason(v6),
    }
}

/// Classifies IPv4 special-purpose ranges (RFC 6890 and friends). `Ipv4Addr::is_global` is unstable, so the
/// list is spelled out here.
fn ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        _ if ip == Ipv4Addr::BROADCAST => "broadcast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(reason)
}

/// Classifies IPv6 special ranges; forms that carry an IPv4 address are judged by that address, because that
/// is where the packets end up.
fn ipv6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = embedded_ipv4(IpAddr::V6(ip)) {
        return ipv4_reason(v4);
    }
    let seg = ip.segments();
    let reason = match seg {
        [0x0064, 0xff9b, 0x0001, ..] => "NAT64 local-use",
        [0x0100, 0, 0, 0, ..] => "discard",
        [0x2001, 0x0db8, ..] => "documentation",
        [s, ..] if s & 0xfe00 == 0xfc00 => "unique-local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    };
    Some(reason)
}

/// The IPv4 address carried inside an IPv6 one: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::`.
fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let seg = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match seg {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4-compatible ones.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, _, _, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    fn strict() -> NetworkPolicy {
        NetworkPolicy::default()
    }

    #[test]
    fn forbidden_by_default_with_reason() {
        let table = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("254.1.1.1", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("192.0.0.8", "protocol assignments"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff05::2", "multicast"),
            ("2001:db8::1", "documentation"),
            ("100::1", "discard"),
            ("64:ff9b:1::1", "NAT64 local-use"),
            // IPv6 forms that carry an IPv4 address are judged by that address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "loopback"),
            ("::192.168.0.1", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
        ];
        for (addr, reason) in table {
            let err = strict().check(ip(addr)).expect_err(&format!("{addr} must be forbidden"));
            assert_eq!(err.reason, reason, "reason for {addr}");
            assert_eq!(err.ip, ip(addr));
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for addr in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "11.0.0.1",
            "2606:4700::1",
            "2a00:1450:4001::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::8.8.8.8",
            "2002:5db8:d822::1",
        ] {
            assert_eq!(strict().check(ip(addr)), Ok(()), "{addr} must be allowed");
        }
    }

    #[test]
    fn allow_private_opens_everything() {
        let policy = NetworkPolicy { allow_private: true, allow_nets: vec![] };
        for addr in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fd00::1", "::ffff:127.0.0.1"] {
            assert_eq!(policy.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allow_nets_open_only_the_listed_ranges() {
        let policy = NetworkPolicy {
            allow_private: false,
            allow_nets: vec!["127.0.0.1/32".parse().expect("net"), "fd00::/8".parse().expect("net")],
        };
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("fd00::5")), Ok(()));
        assert!(policy.check(ip("127.0.0.2")).is_err());
        assert!(policy.check(ip("::1")).is_err());
        assert!(policy.check(ip("10.0.0.1")).is_err());
        assert!(policy.check(ip("fc00::1")).is_err());

        let loopback = NetworkPolicy { allow_private: false, allow_nets: vec!["127.0.0.0/8".parse().expect("net")] };
        assert_eq!(loopback.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(loopback.check(ip("127.1.2.3")), Ok(()));
        assert!(loopback.check(ip("192.168.0.1")).is_err());
    }

    #[test]
    fn message_is_one_public_line() {
        let err = strict().check(ip("127.0.0.1")).expect_err("loopback");
        assert_eq!(err.to_string(), "target address 127.0.0.1 is forbidden (loopback)");
    }
}
