//! E2B's in-sandbox services (envd, DESIGN.md §6) served by the VMM.
//!
//! - `connect`: Connect RPC framing (JSON codec), shared by the services.

pub mod connect;
