//! platform-server: authentication and usage analytics in one binary.

pub mod analytics;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod entity;
pub mod error;
pub mod health;
pub mod http;
pub mod jobs;
pub mod legacy;
pub mod middleware;
pub mod net;
pub mod openapi;
pub mod startup;
pub mod state;
pub mod telemetry;
