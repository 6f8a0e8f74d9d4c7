//! platform-server: authentication and usage analytics in one binary.
//!
//! Layers, each using only those below it: `http` (the edge) and `startup`;
//! the services `auth`, `analytics`, `keys` and `jobs`; `mail` (the outbox
//! and its sender, used by `auth`); storage (`entity`, `db`);
//! infrastructure (`config`, `cache`, `telemetry`, `time`, `json`, `memo`).

pub mod analytics;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod entity;
pub mod http;
pub mod jobs;
pub mod json;
pub mod keys;
pub mod mail;
pub mod memo;
pub mod startup;
pub mod telemetry;
pub mod time;
