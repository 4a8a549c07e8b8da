//! valet: a multi-tenant valet-key files service for device fleets.
//!
//! Devices ask for short-lived signed URLs under their `{tenant}/{device}` root; the
//! bytes go straight to object storage; valet keeps the metadata, verifies what was
//! stored and records a CloudEvent for every completed upload in an outbox.

pub mod auth;
pub mod cache;
pub mod cli;
pub(crate) mod client;
pub mod configuration;
pub mod domain;
pub(crate) mod edge;
pub mod events;
pub mod metadata;
pub(crate) mod mover;
pub(crate) mod notifier;
pub(crate) mod policy;
pub(crate) mod private_file;
pub(crate) mod problem;
pub(crate) mod reconciler;
pub(crate) mod routes;
pub(crate) mod service;
pub mod startup;
pub mod storage;
pub(crate) mod storage_events;
pub mod telemetry;
