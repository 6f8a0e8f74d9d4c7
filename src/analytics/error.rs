//! What the analytics services answer when they refuse. The HTTP edge maps
//! each to a status once (`http::error`).

use sea_orm::DbErr;

/// Input that does not parse: a field out of range, too long, malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Invalid(msg.into())
    }

    /// Names the batch item the problem is in.
    pub fn at(self, field: &str, index: usize) -> Self {
        Invalid(format!("{field}[{index}]: {}", self.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("Batch exceeds the limit of {max} items")]
    BatchTooLarge { max: usize },
    #[error("Ingestion queue is full; retry shortly")]
    QueueFull,
    /// The commit did not happen in time (database down): nothing was stored.
    #[error("Database unavailable; the data was not stored")]
    Unavailable,
    #[error(transparent)]
    Database(#[from] DbErr),
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Database(#[from] DbErr),
}
