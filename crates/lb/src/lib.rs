//! Service load balancing: frontends, backends, Maglev and NAT entries.
#![deny(missing_docs)]
