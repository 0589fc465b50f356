//! A DNS resolver for reqwest that refuses names resolving to forbidden addresses (DNS pinning).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::netpolicy::NetworkPolicy;

/// Resolves with the system resolver (via tokio), then checks every address against the policy.
///
/// The connection is made to exactly the addresses checked here, so a second, different DNS answer (DNS
/// rebinding) can never slip past the check. If *any* address is forbidden the whole name is refused: an
/// attacker controlling the records could otherwise mix a public address with an internal one and rely on the
/// connector falling back to the internal one.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
    lookup: Arc<dyn NameLookup>,
}

/// The future a [`NameLookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Turns a host name into addresses. The system resolver ([`SystemLookup`]) in production; the seam exists so
/// tests can play a DNS server that answers differently each time (DNS rebinding) without any real DNS.
pub trait NameLookup: fmt::Debug + Send + Sync {
    /// All addresses of `host`, in the order to try them.
    fn lookup(&self, host: &str) -> LookupFuture;
}

/// The system resolver (getaddrinfo, via tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl NameLookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

impl PolicyResolver {
    /// A resolver enforcing `policy` on what `lookup` answers.
    pub fn with_lookup(policy: Arc<NetworkPolicy>, lookup: Arc<dyn NameLookup>) -> Self {
        Self { policy, lookup }
    }

    /// Resolves `host` once and checks every address; the port of the returned addresses is 0 (reqwest fills
    /// it in). The addresses returned are the only ones reqwest will connect to.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        // RFC 6761: `localhost`, `localhost.` and every name under it mean this machine, whatever the resolver
        // says about them (or fails to say): judge them as loopback before asking.
        if is_localhost_name(host) {
            self.policy.check(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
        }
        let addrs: Vec<SocketAddr> = self
            .lookup
            .lookup(host)
            .await
            .map_err(ResolveError::Lookup)?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 0))
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(io::Error::new(io::ErrorKind::NotFound, "name resolved to no addresses")));
        }
        for addr in &addrs {
            self.policy.check(addr.ip())?;
        }
        Ok(addrs)
    }
}

/// Whether `host` is `localhost` or a name under it, with or without the root's trailing dot.
fn is_localhost_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Why a name could not be turned into addresses that may be contacted.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name resolved, but to an address the policy refuses.
    #[error(transparent)]
    Forbidden(#[from] super::netpolicy::ForbiddenAddress),
    /// The lookup itself failed (no such name, resolver unreachable).
    #[error("DNS lookup failed: {0}")]
    Lookup(io::Error),
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            match this.resolve_checked(name.as_str()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                // Hand reqwest the bare `ForbiddenAddress` so the fetcher can find it in the error's source chain.
                Err(ResolveError::Forbidden(forbidden)) => Err(Box::new(forbidden) as _),
                Err(other) => Err(Box::new(other) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_is_refused_by_default() {
        let resolver = PolicyResolver::with_lookup(Arc::new(NetworkPolicy::default()), Arc::new(SystemLookup));
        let err = resolver.resolve_checked("localhost").await.expect_err("must refuse");
        match err {
            ResolveError::Forbidden(f) => assert_eq!(f.reason, "loopback"),
            ResolveError::Lookup(e) => panic!("expected Forbidden, got lookup error {e}"),
        }
    }

    #[tokio::test]
    async fn names_under_localhost_are_loopback_whatever_dns_says() {
        #[derive(Debug)]
        struct NoDns;
        impl NameLookup for NoDns {
            fn lookup(&self, _: &str) -> LookupFuture {
                Box::pin(async { Err(io::Error::new(io::ErrorKind::NotFound, "no DNS here")) })
            }
        }
        let resolver = PolicyResolver::with_lookup(Arc::new(NetworkPolicy::default()), Arc::new(NoDns));
        for name in ["localhost.", "LocalHost", "a.localhost", "x.y.localhost."] {
            match resolver.resolve_checked(name).await {
                Err(ResolveError::Forbidden(f)) => assert_eq!(f.reason, "loopback", "{name}"),
                other => panic!("{name}: expected Forbidden, got {other:?}"),
            }
        }
        assert!(matches!(resolver.resolve_checked("notlocalhost").await, Err(ResolveError::Lookup(_))));
    }

    #[tokio::test]
    async fn localhost_is_returned_when_allowed() {
        let policy = NetworkPolicy { allow_private: true, allow_nets: vec![] };
        let resolver = PolicyResolver::with_lookup(Arc::new(policy), Arc::new(SystemLookup));
        let addrs = resolver.resolve_checked("localhost").await.expect("resolves");
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn trait_error_downcasts_to_forbidden_address() {
        let resolver = PolicyResolver::with_lookup(Arc::new(NetworkPolicy::default()), Arc::new(SystemLookup));
        let name: Name = "localhost".parse().expect("valid name");
        let Err(err) = Resolve::resolve(&resolver, name).await else { panic!("must refuse") };
        assert!(err.downcast_ref::<super::super::netpolicy::ForbiddenAddress>().is_some());
    }
}
