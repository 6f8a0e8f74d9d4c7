//! Logs (text or JSON) and the Prometheus recorder (served on the admin
//! listener, `http::admin`).

use std::io::Write;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

mod lines;
pub use lines::Guard as LogGuard;
use lines::Lines;

use crate::config::{LogFormat, LogSettings};

/// Installs the global tracing subscriber; a second call is a no-op (tests).
///
/// Lines are formatted on the thread that logs them and written by a
/// background thread (`lines`), so a slow stdout never stalls a request;
/// the returned guard writes what is waiting when dropped, so keep it until
/// exit. Loggers wait rather than drop a line when the buffer is full.
pub fn init_tracing(settings: &LogSettings) -> Option<LogGuard> {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        let level = settings.filter;
        // Our own crate at the configured level; dependencies one step quieter.
        EnvFilter::new(format!(
            "warn,platform_server={level},migration={level},sea_orm_migration={level}"
        ))
    });
    // Without its thread there is nowhere to log to; the server runs on.
    let (writer, guard) = lines::spawn(std::io::stdout()).ok()?;
    let registry = tracing_subscriber::registry().with(filter);
    let access = writer.clone();
    let installed = match settings.format {
        // The request span's fields once, under "span" (the span list would
        // repeat them in "spans" on every line).
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_target(false).with_writer(writer))
            .try_init(),
    };
    if installed.is_ok() && settings.format == LogFormat::Json {
        let _ = ACCESS.set(access);
    }
    installed.is_ok().then_some(guard)
}

/// The writer of JSON access lines, when JSON logs are installed.
static ACCESS: OnceLock<Lines> = OnceLock::new();

/// What an access line says.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: f64,
}

/// Writes a JSON access line formatted by hand, in the shape tracing's JSON
/// layer gives (`message`, fields, `span`): the generic formatter re-parses
/// the span's fields for every line and cost a third of the server's
/// throughput. Answers `false` where this path is not installed (text logs,
/// tests), so the caller logs through tracing instead.
pub fn write_access_line(line: &AccessLine) -> bool {
    let Some(writer) = ACCESS.get() else {
        return false;
    };
    let mut buf = Vec::with_capacity(320);
    format_access(&mut buf, chrono::Utc::now(), line);
    // The buffer waits rather than drops; an error means the writer is gone.
    let _ = (&*writer).write_all(&buf);
    true
}

fn format_access(buf: &mut Vec<u8>, at: chrono::DateTime<chrono::Utc>, line: &AccessLine) {
    let text = |buf: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *buf, s).expect("strings serialize");
    };
    let ms = if line.latency_ms.is_finite() {
        line.latency_ms
    } else {
        0.0
    };
    let _ = write!(
        buf,
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"request\",\"status\":{},\"latency_ms\":{:.3},\"target\":\"platform_server::http::middleware\",\"span\":{{\"method\":",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        line.status,
        ms,
    );
    text(buf, line.method);
    buf.extend_from_slice(b",\"request_id\":");
    text(buf, line.request_id);
    buf.extend_from_slice(b",\"route\":");
    text(buf, line.route);
    buf.extend_from_slice(b",\"name\":\"http_request\"}}\n");
}

/// The process-wide Prometheus recorder (metrics' recorder is global, so
/// several servers in one test process share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .expect("static bucket list is not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once");
        describe_metrics();
        handle
    })
}

fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route pattern and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route pattern"
    );
    describe_gauge!(
        "db_pool_connections",
        "Database pool connections, by state (idle or in_use)"
    );
    describe_gauge!(
        "db_pool_max_connections",
        "Largest number of connections the database pool may open"
    );
    describe_counter!(
        "legacy_requests_total",
        "Requests served through a deprecated legacy alias, by route"
    );
    describe_counter!(
        "cache_near_hits_total",
        "Lookups answered from the near cache (process memory) instead of Redis"
    );
    describe_gauge!(
        "cache_near_live",
        "1 while the near cache's invalidation channel is subscribed (else it is bypassed)"
    );
    describe_counter!(
        "api_key_requests_total",
        "Requests admitted with a managed API key, by key name (configured keys are not counted)"
    );
    describe_counter!(
        "api_key_rejections_total",
        "Requests refused for their API key, by key name and reason (unknown, revoked, expired, scope, rate, quota)"
    );
    describe_counter!(
        "api_key_limit_unchecked_total",
        "Per-key limits not checked because the shared cache was unavailable"
    );
    describe_counter!(
        "http_panics_total",
        "Handler panics caught and answered with 500"
    );
    describe_counter!(
        "auth_logins_total",
        "Login attempts, by result (success, failure, throttled)"
    );
    describe_counter!("auth_logouts_total", "Sessions ended by logout");
    describe_counter!(
        "auth_refresh_total",
        "Refresh-token uses, by result (rotated, grace, reuse_detected, invalid)"
    );
    describe_counter!("auth_registrations_total", "Accounts registered");
    describe_counter!(
        "auth_mail_requests_total",
        "Password-reset and verification requests, by kind and whether a mail went out"
    );
    describe_counter!(
        "auth_password_changes_total",
        "Passwords changed, by how (change or reset)"
    );
    describe_counter!(
        "auth_email_verifications_total",
        "Addresses verified through a mailed link"
    );
    describe_counter!(
        "auth_email_changes_total",
        "Account addresses changed (confirmed)"
    );
    describe_counter!(
        "auth_mfa_total",
        "Second-factor uses, by method (totp, recovery_code, passkey, passkey_login) and result"
    );
    describe_counter!(
        "auth_mfa_changes_total",
        "Second factors activated, registered, removed (by user or admin), and recovery codes replaced"
    );
    describe_counter!(
        "mail_sent_total",
        "Mails finished, by kind and outcome (sent, logged, discarded, rejected)"
    );
    describe_counter!(
        "mail_send_failures_total",
        "Delivery attempts that failed and will be retried, by kind and class"
    );
    describe_gauge!(
        "mail_outbox_pending",
        "Mails in the outbox not yet delivered"
    );
    describe_counter!("auth_role_changes_total", "Role changes made by admins");
    describe_counter!(
        "auth_user_deactivations_total",
        "Accounts deactivated, by who did it"
    );
    describe_counter!(
        "auth_user_deletions_total",
        "Accounts deleted (soft), by who did it (self or admin)"
    );
    describe_gauge!(
        "component_up",
        "1 while a dependency (database, redis) answers its health check, else 0; refreshed every 15 s"
    );
    describe_counter!("ingest_rows_total", "Events and metrics committed, by kind");
    describe_counter!(
        "ingest_rejected_total",
        "Ingest requests answered 503, by reason (queue_full, database_unavailable)"
    );
    describe_gauge!(
        "stream_connections",
        "Open live event streams on this replica"
    );
    describe_counter!(
        "stream_dropped_total",
        "Live event streams closed because the subscriber fell a whole buffer behind"
    );
    describe_counter!(
        "stream_relay_overflow_total",
        "Committed groups delivered on this replica only, the Redis publisher being backlogged"
    );
    describe_gauge!(
        "ingest_queue_depth",
        "Rows waiting for the group-commit writer"
    );
    describe_histogram!(
        "ingest_commit_duration_seconds",
        Unit::Seconds,
        "Time of one group commit (insert and commit)"
    );
    describe_histogram!("ingest_batch_rows", "Rows in one group commit");
    describe_counter!(
        "job_runs_total",
        "Job runs, by job and result (ok, skipped, error)"
    );
    describe_gauge!(
        "job_last_run_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the job's last run on this replica"
    );
    describe_gauge!(
        "job_last_duration_seconds",
        Unit::Seconds,
        "Duration of the job's last run on this replica"
    );
    describe_gauge!(
        "job_last_rows",
        "Rows the job's last run changed (rollup), deleted (retention) or partitions it made"
    );
    describe_gauge!(
        "job_lag_seconds",
        Unit::Seconds,
        "Seconds since the job last succeeded on any replica"
    );
    describe_gauge!(
        "db_replica_lag_seconds",
        Unit::Seconds,
        "Replay lag of each read replica at its last check (-1 while unreachable)"
    );
    describe_gauge!(
        "db_replica_in_use",
        "1 while the replica serves analytics reads, 0 while lagging or unreachable"
    );
    describe_counter!(
        "db_reads_total",
        "Analytics reads by where they ran: replica or primary"
    );
    describe_gauge!(
        "analytics_partitions",
        "Time partitions of the raw table, the default one apart (Postgres)"
    );
    describe_gauge!(
        "analytics_partitions_ahead_seconds",
        Unit::Seconds,
        "How far past now the raw table's partitions reach without a gap"
    );
}

/// Drains recorded histogram samples into their buckets every few seconds.
/// The recorder otherwise keeps every sample until a scrape: a server nobody
/// scrapes grew by about 1 MiB a minute under load (found by the soak).
pub async fn upkeep(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let handle = prometheus();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_json_in_the_layer_shape() {
        let mut buf = vec![];
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-02T11:00:00.5Z")
            .unwrap()
            .to_utc();
        format_access(
            &mut buf,
            at,
            &AccessLine {
                request_id: "r-1",
                method: "GET",
                route: "/a/\"{id}\"",
                status: 404,
                latency_ms: 1.23456,
            },
        );
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-02T11:00:00.500000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["status"], 404);
        assert_eq!(v["latency_ms"], 1.235);
        assert_eq!(v["span"]["request_id"], "r-1");
        assert_eq!(v["span"]["route"], "/a/\"{id}\"");
        assert_eq!(v["span"]["method"], "GET");
    }
}
