//! Tessera: a Kubernetes operator and its storage node for sharded,
//! replicated, Redis-protocol key-value clusters.

pub mod node;
