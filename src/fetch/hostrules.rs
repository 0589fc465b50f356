//! Which upstream hosts and ports may be fetched at all: the operator's allowlist and denylist, applied to the
//! URL of every hop (the first target and each redirect) before any connection is made.
//!
//! These rules are about names as written in the URL; which *addresses* may be contacted is [`NetworkPolicy`]'s
//! job (SSRF). Both must pass.
//!
//! [`NetworkPolicy`]: super::NetworkPolicy

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

/// One `--allow-host`/`--deny-host` pattern: an exact host, or `*.domain` for every subdomain of `domain` at any
/// depth (but not `domain` itself). Names are stored as WHATWG URL hosts are: IDNA-normalised to lower-case
/// ASCII (punycode), without a trailing dot, so `BÜCHER.example.` and `xn--bcher-kva.example` are one pattern.
#[derive(Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name ending in `.{suffix}`.
    Subdomains(String),
    /// Exactly this IP literal (however the URL spells it: `http://2130706433/` is `127.0.0.1`).
    Ip(IpAddr),
}

/// Why a pattern was refused at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<HostPattern, PatternError> {
        let fail = |reason| PatternError { pattern: text.to_owned(), reason };
        let trimmed = text.trim();
        let (wildcard, name) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(fail("empty host"));
        }
        if !wildcard && let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(HostPattern::Ip(ip));
        }
        if name.contains(['*', '/', ':', '@', '?', '#']) && !name.starts_with('[') {
            return Err(fail(
                "expected a host name like images.example.com or *.example.com (no scheme, port or path)",
            ));
        }
        // The URL parser's own host parsing: IDNA, case folding and IPv4 number forms exactly as for targets.
        let host = Host::parse(name).map_err(|_| fail("not a valid host name"))?;
        let pattern = match host {
            Host::Domain(domain) if wildcard => HostPattern::Subdomains(domain),
            Host::Domain(domain) => HostPattern::Exact(domain),
            Host::Ipv4(_) | Host::Ipv6(_) if wildcard => return Err(fail("a wildcard cannot apply to an IP address")),
            Host::Ipv4(v4) => HostPattern::Ip(IpAddr::V4(v4)),
            Host::Ipv6(v6) => HostPattern::Ip(IpAddr::V6(v6)),
        };
        if let HostPattern::Exact(domain) | HostPattern::Subdomains(domain) = &pattern
            && domain.ends_with('.')
        {
            return Err(fail("more than one trailing dot"));
        }
        Ok(pattern)
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl HostPattern {
    /// Whether `host` (a URL's host, as the URL parser normalised it) matches.
    pub fn matches(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (HostPattern::Exact(name), Host::Domain(domain)) => without_dot(domain) == name,
            (HostPattern::Subdomains(suffix), Host::Domain(domain)) => without_dot(domain)
                .strip_suffix(suffix.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.')),
            (HostPattern::Ip(ip), Host::Ipv4(v4)) => *ip == IpAddr::V4(*v4),
            (HostPattern::Ip(ip), Host::Ipv6(v6)) => *ip == IpAddr::V6(*v6),
            _ => false,
        }
    }
}

/// `example.com.` and `example.com` name the same host.
fn without_dot(domain: &str) -> &str {
    domain.strip_suffix('.').unwrap_or(domain)
}

/// The operator's host and port rules. Empty (the default) allows every host and port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRules {
    /// When not empty, only hosts matching one of these are fetched.
    pub allow: Vec<HostPattern>,
    /// Hosts never fetched; wins over `allow`.
    pub deny: Vec<HostPattern>,
    /// When not empty, only these ports are fetched (a URL without a port counts as 80 or 443).
    pub ports: Vec<u16>,
}

/// Why a URL is refused by the host rules. One line, safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    /// The host matches a `--deny-host` pattern.
    #[error("target host {0} is denied by the server's host rules")]
    Denied(String),
    /// Allow rules exist and the host matches none.
    #[error("target host {0} is not in the server's allowed hosts")]
    NotAllowed(String),
    /// `--allow-port` rules exist and the port is not one of them.
    #[error("target port {0} is not allowed by the server")]
    Port(u16),
}

impl HostRules {
    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.ports.is_empty()
    }

    /// Checks one URL (a target or a redirect hop). A URL without a host is not this check's business.
    pub fn check(&self, url: &Url) -> Result<(), HostRefusal> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(host) = url.host() else {
            return Ok(());
        };
        if self.deny.iter().any(|pattern| pattern.matches(&host)) {
            return Err(HostRefusal::Denied(host.to_string()));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|pattern| pattern.matches(&host)) {
            return Err(HostRefusal::NotAllowed(host.to_string()));
        }
        if !self.ports.is_empty() {
            // The scheme is already checked to be http(s), so there is always a known default.
            let port = url.port_or_known_default().unwrap_or(0);
            if !self.ports.contains(&port) {
                return Err(HostRefusal::Port(port));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn matches(pattern_text: &str, url: &str) -> bool {
        let url = Url::parse(url).expect("test URL parses");
        pattern(pattern_text).matches(&url.host().expect("test URL has a host"))
    }

    #[test]
    fn exact_names_ignore_case_and_trailing_dots() {
        assert!(matches("static.1sapp.com", "http://static.1sapp.com/a.jpg"));
        assert!(matches("static.1sapp.com", "http://STATIC.1Sapp.COM/a.jpg"));
        assert!(matches("Static.1SAPP.com", "http://static.1sapp.com/a.jpg"));
        assert!(matches("static.1sapp.com.", "http://static.1sapp.com/a.jpg"));
        assert!(matches("static.1sapp.com", "http://static.1sapp.com./a.jpg"));
        assert!(!matches("static.1sapp.com", "http://img.static.1sapp.com/a.jpg"));
        assert!(!matches("static.1sapp.com", "http://static.1sapp.com.evil.example/a.jpg"));
        assert!(!matches("static.1sapp.com", "http://xstatic.1sapp.com/a.jpg"));
    }

    #[test]
    fn wildcards_match_subdomains_at_any_depth_but_not_the_apex() {
        assert!(matches("*.1sapp.com", "http://static.1sapp.com/a.jpg"));
        assert!(matches("*.1sapp.com", "http://a.b.c.1sapp.com/a.jpg"));
        assert!(matches("*.1SAPP.com.", "http://Static.1sapp.com./a.jpg"));
        assert!(!matches("*.1sapp.com", "http://1sapp.com/a.jpg"));
        assert!(!matches("*.1sapp.com", "http://evil1sapp.com/a.jpg"));
        assert!(!matches("*.1sapp.com", "http://1sapp.com.evil.example/a.jpg"));
    }

    #[test]
    fn idna_patterns_match_punycode_hosts() {
        assert_eq!(pattern("bücher.example"), HostPattern::Exact("xn--bcher-kva.example".to_owned()));
        assert!(matches("bücher.example", "http://xn--bcher-kva.example/a.jpg"));
        assert!(matches("BÜCHER.example", "http://bücher.example/a.jpg"));
        assert!(matches("xn--bcher-kva.example", "http://BÜCHER.example/a.jpg"));
        assert!(matches("*.bücher.example", "http://img.xn--bcher-kva.example/a.jpg"));
    }

    #[test]
    fn ip_patterns_match_ip_literals_in_any_spelling_and_never_names() {
        assert_eq!(pattern("127.0.0.1"), HostPattern::Ip("127.0.0.1".parse().expect("ip")));
        assert!(matches("127.0.0.1", "http://127.0.0.1:8080/a.jpg"));
        assert!(matches("127.0.0.1", "http://2130706433/a.jpg"));
        assert!(matches("127.0.0.1", "http://0x7f.1/a.jpg"));
        assert!(matches("[::1]", "http://[0:0::1]/a.jpg"));
        assert!(matches("::1", "http://[::1]/a.jpg"));
        assert!(!matches("127.0.0.1", "http://localhost/a.jpg"));
        assert!(!matches("localhost", "http://127.0.0.1/a.jpg"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*.", "*", "*.*.example.com", "a.*.example.com", "http://example.com", "example.com:80"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?} must be refused");
        }
        assert!("example.com/".parse::<HostPattern>().is_err());
        assert!("*.127.0.0.1".parse::<HostPattern>().is_err());
        assert!("exa mple.com".parse::<HostPattern>().is_err());
    }

    fn rules(allow: &[&str], deny: &[&str], ports: &[u16]) -> HostRules {
        HostRules {
            allow: allow.iter().map(|p| pattern(p)).collect(),
            deny: deny.iter().map(|p| pattern(p)).collect(),
            ports: ports.to_vec(),
        }
    }

    fn check(rules: &HostRules, url: &str) -> Result<(), HostRefusal> {
        rules.check(&Url::parse(url).expect("test URL parses"))
    }

    #[test]
    fn no_rules_allow_everything() {
        assert_eq!(check(&HostRules::default(), "http://anything.example:1234/a.jpg"), Ok(()));
    }

    #[test]
    fn allow_deny_and_ports_combine() {
        let rules = rules(&["static.1sapp.com", "*.1sapp.com"], &["ads.1sapp.com"], &[80, 443]);
        assert_eq!(check(&rules, "http://static.1sapp.com/a.jpg"), Ok(()));
        assert_eq!(check(&rules, "https://img.1sapp.com/a.jpg"), Ok(()));
        assert_eq!(check(&rules, "http://static.1sapp.com:80/a.jpg"), Ok(()));
        assert_eq!(check(&rules, "http://ads.1sapp.com/a.jpg"), Err(HostRefusal::Denied("ads.1sapp.com".into())));
        assert_eq!(check(&rules, "http://1sapp.com/a.jpg"), Err(HostRefusal::NotAllowed("1sapp.com".into())));
        assert_eq!(check(&rules, "http://evil.example/a.jpg"), Err(HostRefusal::NotAllowed("evil.example".into())));
        assert_eq!(check(&rules, "http://static.1sapp.com:8080/a.jpg"), Err(HostRefusal::Port(8080)));
        assert_eq!(check(&rules, "https://static.1sapp.com:80/a.jpg"), Ok(()));
        let https_only = self::rules(&[], &[], &[443]);
        assert_eq!(check(&https_only, "http://static.1sapp.com/a.jpg"), Err(HostRefusal::Port(80)));
        assert_eq!(check(&https_only, "https://static.1sapp.com/a.jpg"), Ok(()));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = rules(&["*.example.com"], &["*.example.com"], &[]);
        assert_eq!(check(&rules, "http://a.example.com/"), Err(HostRefusal::Denied("a.example.com".into())));
    }

    #[test]
    fn refusal_is_one_public_line() {
        let rules = rules(&["static.1sapp.com"], &[], &[]);
        let refusal = check(&rules, "http://evil.example/a.jpg").expect_err("refused");
        assert_eq!(refusal.to_string(), "target host evil.example is not in the server's allowed hosts");
    }
}
