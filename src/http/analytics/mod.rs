//! `/analytics/*`: ingestion and queries, usage and costs.

pub mod dto;
pub mod routes;
pub mod stream;
pub mod usage;
