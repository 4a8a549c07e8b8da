//! Device and service tokens: root keys, minting (the development token service),
//! the `TokenValidator` actor (first sight of a token), the `Authenticator` (the
//! cache of verified tokens every request goes through) and the per-request checks.

mod authenticator;
pub mod keys;
mod permissions;
pub mod token;
mod validator;

pub use authenticator::Authenticator;
pub use keys::{RootKey, TrustedKeys};
pub use permissions::{AuthError, Request};
pub use validator::{verify, Authenticate, Authenticated, TokenValidator};
