//! The analytics section: ingestion limits, the group-commit writer and
//! the live stream.

use std::time::Duration;

use super::{AnalyticsSettings, ConfigError, Raw, StreamSettings, ensure};

pub(super) fn analytics_settings(r: &Raw) -> Result<AnalyticsSettings, ConfigError> {
    ensure(
        r.analytics_retention_days > 0,
        "analytics_retention_days",
        "must be at least 1",
    )?;
    ensure(
        (1..=100_000).contains(&r.analytics_batch_limit),
        "analytics_batch_limit",
        "must be between 1 and 100000",
    )?;
    ensure(
        (2..=16 * 1024 * 1024).contains(&r.analytics_json_max_bytes),
        "analytics_json_max_bytes",
        "must be between 2 and 16777216",
    )?;
    ensure(
        r.ingest_queue_capacity > 0 && r.ingest_max_batch_rows > 0,
        "ingest_queue_capacity",
        "INGEST_QUEUE_CAPACITY and INGEST_MAX_BATCH_ROWS must be at least 1",
    )?;
    ensure(
        (1..=16).contains(&r.ingest_writers),
        "ingest_writers",
        "must be between 1 and 16",
    )?;
    ensure(
        (1..=300).contains(&r.ingest_wait_timeout),
        "ingest_wait_timeout",
        "must be between 1 and 300 seconds",
    )?;
    ensure(
        (16..=1_000_000).contains(&r.stream_buffer),
        "stream_buffer",
        "must be between 16 and 1000000 events",
    )?;
    ensure(
        (1..=10_000).contains(&r.stream_max_per_caller),
        "stream_max_per_caller",
        "must be between 1 and 10000",
    )?;
    ensure(
        (1..=3600).contains(&r.stream_heartbeat),
        "stream_heartbeat",
        "must be between 1 and 3600 seconds",
    )?;
    ensure(
        r.metrics_batch_size > 0,
        "metrics_batch_size",
        "must be at least 1",
    )?;
    Ok(AnalyticsSettings {
        retention_days: r.analytics_retention_days,
        metrics_batch_size: r.metrics_batch_size,
        batch_limit: r.analytics_batch_limit,
        json_max_bytes: r.analytics_json_max_bytes,
        json_max_keys: r.json_max_keys,
        json_max_items: r.json_max_items,
        clock_skew: Duration::from_secs(r.ingest_clock_skew),
        queue_capacity: r.ingest_queue_capacity,
        max_batch_rows: r.ingest_max_batch_rows,
        wait_timeout: Duration::from_secs(r.ingest_wait_timeout),
        writers: r.ingest_writers,
        stream: StreamSettings {
            buffer: r.stream_buffer,
            max_per_caller: r.stream_max_per_caller,
            heartbeat: Duration::from_secs(r.stream_heartbeat),
        },
    })
}
