//! The HTTP edge: HTTPS, which client a request really comes from, and the limits
//! that keep an overloaded valet answering instead of queueing without bound.

pub mod limits;
pub mod protocol_errors;
pub mod proxy;
pub mod server;
pub mod tls;

pub use limits::{enforce_limits, Limits};
pub use proxy::{client_address, TrustedProxies};
pub use server::{ServerOptions, TlsConnection};
pub use tls::{CertificateStore, VerifiedClientCertificate};
