//! The administrative surface: what the admin listener answers (`POST /purge`, ...), never the public port.

pub mod purge;
