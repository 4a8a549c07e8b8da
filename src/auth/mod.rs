//! Device and service tokens: biscuits signed by trusted root keys (configured, or
//! published by URL), JWTs from trusted issuers (their JWKS), minting for
//! development, the `TokenValidator` actor (first sight of a token), the
//! `Authenticator` (the cache of verified tokens every request goes through) and
//! the per-request checks.

mod authenticator;
mod biscuit;
pub mod jwks;
pub mod jwt;
pub mod jwt_signing;
mod key_set;
pub mod key_source;
pub mod keys;
mod permissions;
pub mod token;
pub mod trust;
mod validator;

pub use authenticator::Authenticator;
pub use jwt_signing::{JwtClaims, JwtSigningKey};
pub use keys::{RootKey, TrustedKeys};
pub use permissions::{AuthError, Credential, Request};
pub use trust::TrustStore;
pub use validator::{Authenticate, Authenticated, TokenValidator};
