//! Device and service tokens: root keys, minting (the development token service)
//! and the `TokenValidator` actor.

pub mod keys;
pub mod token;
mod validator;

pub use keys::{RootKey, TrustedKeys};
pub use validator::{AuthError, Authenticate, Authenticated, Authorize, TokenValidator};
