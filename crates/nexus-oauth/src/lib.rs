//! OAuth2 and OpenID Connect for Nexus, on the `oauth2` and `openidconnect`
//! crates: discovery, authorization URLs with PKCE, code exchange and
//! refresh with either client authentication method, `id_token`
//! verification against the provider's JWKS, and token revocation.
//!
//! Providers deviate from the RFCs in small ways; [`http::ProviderHttp`] evens
//! those out *before* the crates parse a reply (form-encoded token responses,
//! an `error` inside a `200`, `expires_in` as a string), so the protocol logic
//! itself stays the crates'.

pub mod assertion;
pub mod client;
pub mod discovery;
pub mod flow;
pub mod http;
pub mod id_token;
pub mod revoke;

pub use client::Endpoints;
pub use discovery::discover;
pub use flow::{
    authorization_url, client_credentials, exchange_code, jwt_bearer, new_pkce_verifier, refresh, AuthorizationParams,
    ClientAuth, ClientConfig, OAuthError, TokenSet,
};
pub use http::{ProviderHttp, TokenQuirks};
pub use id_token::{fetch_key_set, verify_id_token, verify_id_token_with, IdTokenCheck, IdTokenError, KeySet};
pub use revoke::{revoke, RevocableToken};
