//! Tessera: a Kubernetes operator and its storage node for sharded,
//! replicated, Redis-protocol key-value clusters.

pub mod api;
pub mod backup;
pub mod cli;
pub mod client;
pub mod node;
pub mod operator;
