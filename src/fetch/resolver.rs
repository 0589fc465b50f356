//! A DNS resolver for reqwest that refuses names resolving to forbidden addresses (DNS pinning).

use std::io;
use std::net::SocketAddr;
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
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<NetworkPolicy>) -> Self {
        Self { policy }
    }

    /// Resolves `host` and checks every address; the port of the returned addresses is 0 (reqwest fills it in).
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await.map_err(ResolveError::Lookup)?.collect();
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(io::Error::new(io::ErrorKind::NotFound, "name resolved to no addresses")));
        }
        for addr in &addrs {
            self.policy.check(addr.ip())?;
        }
        Ok(addrs)
    }
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
        let resolver = PolicyResolver::new(Arc::new(NetworkPolicy::default()));
        let err = resolver.resolve_checked("localhost").await.expect_err("must refuse");
        match err {
            ResolveError::Forbidden(f) => assert_eq!(f.reason, "loopback"),
            ResolveError::Lookup(e) => panic!("expected Forbidden, got lookup error {e}"),
        }
    }

    #[tokio::test]
    async fn localhost_is_returned_when_allowed() {
        let policy = NetworkPolicy { allow_private: true, allow_nets: vec![] };
        let resolver = PolicyResolver::new(Arc::new(policy));
        let addrs = resolver.resolve_checked("localhost").await.expect("resolves");
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn trait_error_downcasts_to_forbidden_address() {
        let resolver = PolicyResolver::new(Arc::new(NetworkPolicy::default()));
        let name: Name = "localhost".parse().expect("valid name");
        let err = match Resolve::resolve(&resolver, name).await {
            Ok(_) => panic!("must refuse"),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<super::super::netpolicy::ForbiddenAddress>().is_some());
    }
}
