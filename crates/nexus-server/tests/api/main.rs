//! Black-box API tests: the real server on a random port, over HTTP, each test
//! on SQLite and on PostgreSQL.

mod access;
mod audit;
mod bad_input;
mod capture;
mod catalog;
mod connect_browser;
mod connect_ui;
mod contract;
mod grants;
mod keys;
mod leaks;
mod limits;
mod metrics;
mod network;
mod oauth;
mod openapi;
mod providers;
mod proxy;
mod refresh;
mod replicas;
mod seeds;
mod webhooks;
