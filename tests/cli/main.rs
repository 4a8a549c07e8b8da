//! Black-box tests of the `valet` command line: every test runs the real binary in
//! its own temporary working directory (so the default `./valet-data` is private to
//! the test) and, where a server is needed, spawns `valet serve` on a free port.
//! Covered: configuration checks, keys and tokens, the client commands, graceful
//! shutdown on signals, the event relay, transfers between devices, uploads in parts and
//! downloads resumed after the client was killed, and jobs moving files between backends
//! (surviving a killed server).

mod batches;
mod client;
mod config;
mod helpers;
mod jobs;
mod parts;
// Shared with the API tests, which use all of it.
#[allow(dead_code)]
#[path = "../support/patience.rs"]
mod patience;
mod process;
mod proxy;
mod relay;
mod signals;
mod tokens;
#[path = "../support/topic_consumer.rs"]
mod topic_consumer;
mod transfers;
