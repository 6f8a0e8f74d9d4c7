//! The HTTP edge: routes, extractors, DTOs, middleware, the one error
//! mapping, state, probes, docs and legacy aliases. It translates requests
//! into service calls and service answers (or errors) into responses.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod body;
pub mod bounded;
pub mod callers;
pub mod dashboard;
pub mod error;
pub mod health;
pub mod jobs;
pub mod keys;
pub mod legacy;
pub mod limits;
pub mod middleware;
pub mod net;
pub mod openapi;
pub mod state;

pub use error::{ApiError, ErrorBody, json_error};
pub use state::AppState;
