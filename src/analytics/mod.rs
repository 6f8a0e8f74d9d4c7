//! Analytics: durable group-commit ingestion and bounded queries.

pub mod dto;
pub mod ingest;
pub mod queries;
pub mod rollups;
pub mod routes;
pub mod usage;
