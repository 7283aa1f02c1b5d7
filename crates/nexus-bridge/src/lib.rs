//! The agent side of Nexus. [`apply`] interprets a strategy from
//! `GET /v1/token/{id}` and signs an `http::Request` with the connection's
//! credentials; Nexus itself uses the same code to verify captured
//! credentials live, so what is checked at capture is what agents send.

pub mod strategies;

pub use strategies::{apply, BridgeError};
