//! Analytics: durable group-commit ingestion, the per-minute and per-hour
//! counters kept beside it, bounded queries, and usage and cost reports.
//! Plain services; HTTP lives in `crate::http`.

pub mod audience;
pub mod counters;
pub mod domain;
mod error;
pub mod export;
pub mod key_generations;
pub mod live;
pub mod pricing;
pub mod queries;
pub mod queue;
mod store;
pub mod usage;
pub mod views;

pub use domain::{Event, Metric, MetricType, NewEvent, NewMetric};
pub use error::{IngestError, Invalid, QueryError};
