//! Black-box tests of the HTTP API: each test spawns the real server on a random
//! port with its own data directory and talks to it over HTTP.

mod amqp;
mod auth;
mod batches;
mod cache;
mod cloud;
mod conformance;
#[path = "../support/cuttable_proxy.rs"]
mod cuttable_proxy;
mod edge;
mod errors;
mod files;
mod helpers;
mod jwt;
mod local_store;
mod multipart;
mod ops;
mod orphans;
mod parts;
#[path = "../support/patience.rs"]
mod patience;
mod policy;
mod postgres;
mod ranges;
mod reconciler;
mod storage_events;
mod streaming;
mod transfers;
