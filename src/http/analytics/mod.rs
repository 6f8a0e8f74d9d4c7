//! `/analytics/*`: ingestion and queries, usage and costs.

pub mod dto;
pub mod routes;
pub mod usage;
