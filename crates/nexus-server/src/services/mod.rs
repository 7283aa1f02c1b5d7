//! Business operations behind the handlers: each takes checked input, talks to
//! the store (and providers), and returns a view or an [`crate::error::ApiError`].

pub mod api_keys;
pub mod audit;
pub mod capture;
pub mod connect_sessions;
pub mod connect_ui;
pub mod connection_config;
pub mod connections;
pub mod housekeeping;
pub mod key_sets;
pub mod providers;
pub mod proxy;
pub mod refresh;
pub mod refresher;
pub mod state_token;
pub mod strategy;
pub mod tenant_discovery;
pub mod token_cache;
pub mod tokens;
pub mod webhook_sender;
pub mod webhooks;
