//! The adversarial suite of SECURITY.md: SSRF (every spelling, every non-public range, DNS rebinding), resource
//! limits, hostile upstreams, hostile images, slow clients, and property tests of the parsers. Each test names
//! the exact status it expects and, where a forbidden address is involved, proves that address saw no
//! connection (a loopback listener counts what it accepts).

#[path = "../common/mod.rs"]
mod common;

mod hostile;
mod limits;
mod props;
mod rebinding;
mod slowloris;
mod ssrf;
mod upstreams;
