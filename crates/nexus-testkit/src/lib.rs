//! placeholder

pub mod oidc;
