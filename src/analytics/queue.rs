//! Group commit. Requests put their rows on a bounded queue; one writer task
//! takes everything waiting, inserts it with multi-row statements in one
//! transaction, commits, and only then answers each request with its ids.
//! A request's rows are stored all or nothing; a success answer means committed.
//!
//! Further writers (`INGEST_WRITERS`) help only while a backlog of at least
//! `HELPER_BACKLOG` rows waits: large batches then insert in parallel, while
//! a stream of small requests stays in one writer's larger groups (measured
//! with single events: 21k/s with one writer, 17–19k/s with two, 16k/s with
//! three, as groups shrank and commits multiplied).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::live::LiveFeed;
use super::store::{self, ROWS_PER_STATEMENT};
use super::{Event, IngestError, Metric, NewEvent, NewMetric};
use crate::config::AnalyticsSettings;

const HELPER_BACKLOG: usize = ROWS_PER_STATEMENT;
/// How often an idle helper looks at the backlog.
const HELPER_POLL: Duration = Duration::from_millis(2);

type Reply<T> = oneshot::Sender<Result<T, IngestError>>;

/// A request's rows and where its answer goes, typed by kind.
pub(super) enum Rows {
    Events(Vec<NewEvent>, Reply<Vec<Event>>),
    Metrics(Vec<NewMetric>, Reply<StoredMetrics>),
}

/// Committed metrics: the rows as sent, handed back with their ids, so that
/// building answers from them (or dropping them) is the request's work, not
/// the writer's.
#[derive(Debug, Default)]
pub struct StoredMetrics {
    pub rows: Vec<NewMetric>,
    pub ids: Vec<i64>,
}

impl StoredMetrics {
    pub fn into_metrics(self) -> Vec<Metric> {
        self.rows
            .into_iter()
            .zip(self.ids)
            .map(|(m, id)| store::stored_metric(id, m))
            .collect()
    }
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Events(v, _) => v.len(),
            Rows::Metrics(v, _) => v.len(),
        }
    }

    fn fail(self, err: IngestError) {
        match self {
            Rows::Events(_, reply) => {
                let _ = reply.send(Err(err));
            }
            Rows::Metrics(_, reply) => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

pub(super) struct Job {
    pub(super) rows: Rows,
    deadline: Instant,
}

#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Job>,
    wait: Duration,
    queued: Arc<AtomicUsize>,
}

/// The queue the writers share, with the rows it holds (which the
/// `ingest_queue_depth` gauge shows).
struct Queue {
    rx: Mutex<mpsc::Receiver<Job>>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn taken(&self, rows: usize) {
        let depth = self.queued.fetch_sub(rows, Ordering::Relaxed) - rows;
        ::metrics::gauge!("ingest_queue_depth").set(depth as f64);
    }
}

impl IngestHandle {
    /// Stores events; answers them as committed, with their ids (for a known
    /// `event_id`, the row stored first).
    pub async fn submit_events(&self, rows: Vec<NewEvent>) -> Result<Vec<Event>, IngestError> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Rows::Events(rows, reply), rx).await
    }

    /// Stores metrics; answers them as committed, with their ids.
    pub async fn submit_metrics(&self, rows: Vec<NewMetric>) -> Result<StoredMetrics, IngestError> {
        if rows.is_empty() {
            return Ok(StoredMetrics::default());
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Rows::Metrics(rows, reply), rx).await
    }

    /// Queues rows and waits for their commit. A full queue answers at once;
    /// a commit that cannot happen in time (database down) later.
    async fn submit<T>(
        &self,
        rows: Rows,
        rx: oneshot::Receiver<Result<T, IngestError>>,
    ) -> Result<T, IngestError> {
        let n = rows.len();
        let job = Job {
            rows,
            deadline: Instant::now() + self.wait,
        };
        // Counted before it is queued: a writer may take it at once.
        let depth = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        if self.tx.try_send(job).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            ::metrics::counter!("ingest_rejected_total", "reason" => "queue_full").increment(1);
            return Err(IngestError::QueueFull);
        }
        ::metrics::gauge!("ingest_queue_depth").set(depth as f64);
        match tokio::time::timeout(self.wait + Duration::from_secs(1), rx).await {
            Ok(Ok(reply)) => reply,
            // The writer answers every job it takes; a dropped reply or a
            // timeout means the outcome is unknown, which is never a success.
            _ => Err(IngestError::Unavailable),
        }
    }
}

pub struct Writer {
    pub handle: IngestHandle,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the writer tasks sharing one queue (`writers` on Postgres, where
/// two overlap one group's commit with the next group's inserts; SQLite has
/// one writer at a time anyway). They run until `shutdown` turns true, then
/// drain what is queued before they return.
pub fn start(
    db: DatabaseConnection,
    settings: &AnalyticsSettings,
    live: Arc<LiveFeed>,
    shutdown: watch::Receiver<bool>,
) -> Writer {
    let writers = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => settings.writers,
        _ => 1,
    };
    let max_rows = settings.max_batch_rows;
    let wait = settings.wait_timeout;
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    let queued = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(Queue {
        rx: Mutex::new(rx),
        queued: queued.clone(),
    });
    let tasks = (0..writers.max(1))
        .map(|i| {
            tokio::spawn(run(
                db.clone(),
                live.clone(),
                queue.clone(),
                max_rows,
                i > 0,
                shutdown.clone(),
            ))
        })
        .collect();
    Writer {
        handle: IngestHandle { tx, wait, queued },
        tasks,
    }
}

async fn run(
    db: DatabaseConnection,
    live: Arc<LiveFeed>,
    queue: Arc<Queue>,
    max_rows: usize,
    helper: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = store::Held::default();
    loop {
        if helper {
            // Helpers leave draining at shutdown to the first writer.
            if *shutdown.borrow() {
                break;
            }
            if queue.queued.load(Ordering::Relaxed) < HELPER_BACKLOG {
                held.release();
                tokio::select! {
                    _ = tokio::time::sleep(HELPER_POLL) => {}
                    _ = wait_for_stop(&mut shutdown) => {}
                }
                continue;
            }
        }
        // One writer gathers a group at a time; it commits after letting go.
        let mut rx = queue.rx.lock().await;
        let next = if helper {
            // The backlog may have gone to another writer meanwhile.
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(_) => continue,
            }
        } else {
            if rx.is_empty() {
                held.release();
            }
            tokio::select! {
                job = rx.recv() => job,
                _ = wait_for_stop(&mut shutdown) => None,
            }
        };
        let Some(first) = next else {
            rx.close();
            // Everything already queued is still written.
            let mut rest = Vec::new();
            while let Ok(job) = rx.try_recv() {
                queue.taken(job.rows.len());
                rest.push(job);
            }
            if !rest.is_empty() {
                tracing::info!(jobs = rest.len(), "draining the ingest queue");
                for chunk in chunk_jobs(rest, max_rows) {
                    process(&db, &mut held, &live, chunk).await;
                }
            }
            break;
        };
        let mut jobs = vec![first];
        let mut rows = jobs[0].rows.len();
        while rows < max_rows {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        drop(rx);
        queue.taken(rows);
        process(&db, &mut held, &live, jobs).await;
    }
    tracing::info!("ingest writer stopped");
}

async fn wait_for_stop(shutdown: &mut watch::Receiver<bool>) {
    // A dropped sender also means stop.
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

fn chunk_jobs(jobs: Vec<Job>, max_rows: usize) -> Vec<Vec<Job>> {
    let mut out: Vec<Vec<Job>> = vec![];
    let mut rows = 0;
    for job in jobs {
        if out.is_empty() || rows + job.rows.len() > max_rows {
            out.push(vec![]);
            rows = 0;
        }
        rows += job.rows.len();
        out.last_mut().expect("pushed above").push(job);
    }
    out
}

/// Commits a group, retrying while the database is unreachable and each
/// job's deadline allows. A data error in the group falls back to one
/// commit per job, so one bad request cannot fail its neighbours.
async fn process(
    db: &DatabaseConnection,
    held: &mut store::Held,
    live: &LiveFeed,
    mut jobs: Vec<Job>,
) {
    let rows: usize = jobs.iter().map(|j| j.rows.len()).sum();
    let mut backoff = Duration::from_millis(50);
    loop {
        let start = Instant::now();
        match store::commit(db, held, &jobs, live.wanted()).await {
            Ok(mut stored) => {
                // Committed: only now may subscribers see them.
                live.publish(std::mem::take(&mut stored.new_events));
                ::metrics::histogram!("ingest_commit_duration_seconds")
                    .record(start.elapsed().as_secs_f64());
                ::metrics::histogram!("ingest_batch_rows").record(rows as f64);
                for job in jobs {
                    answer(job.rows, &mut stored);
                }
                return;
            }
            Err(e) if crate::db::is_connection_error(&e) => {
                tracing::warn!(error = %e, jobs = jobs.len(), "ingest commit failed; database unreachable, retrying");
                let now = Instant::now();
                let (expired, live): (Vec<Job>, Vec<Job>) =
                    jobs.into_iter().partition(|j| j.deadline <= now + backoff);
                for job in expired {
                    ::metrics::counter!("ingest_rejected_total", "reason" => "database_unavailable").increment(1);
                    job.rows.fail(IngestError::Unavailable);
                }
                if live.is_empty() {
                    return;
                }
                jobs = live;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, "group commit failed; committing its requests one by one");
                for job in jobs {
                    Box::pin(process(db, held, live, vec![job])).await;
                }
                return;
            }
            Err(e) => {
                let job = jobs.pop().expect("one job");
                job.rows.fail(IngestError::Database(e));
                return;
            }
        }
    }
}

/// Sends a job its share of the committed rows (they come back in job order).
fn answer(rows: Rows, stored: &mut store::Committed) {
    match rows {
        Rows::Events(v, reply) => {
            let mine: Vec<Event> = stored.events.by_ref().take(v.len()).collect();
            ::metrics::counter!("ingest_rows_total", "kind" => "event")
                .increment(mine.len() as u64);
            let _ = reply.send(Ok(mine));
        }
        Rows::Metrics(v, reply) => {
            let ids: Vec<i64> = stored.metric_ids.by_ref().take(v.len()).collect();
            ::metrics::counter!("ingest_rows_total", "kind" => "metric")
                .increment(ids.len() as u64);
            let _ = reply.send(Ok(StoredMetrics { rows: v, ids }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_metric() -> NewMetric {
        NewMetric {
            metric_name: "m".into(),
            metric_value: 1.0,
            metric_type: super::super::MetricType::Counter,
            user_id: None,
            service_name: None,
            endpoint: None,
            labels: serde_json::json!({}),
            timestamp: crate::time::now(),
            api_key_id: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_and_a_stalled_writer_answer_503() {
        // A queue of one with no writer behind it: the first request waits
        // its bounded time, the second finds the queue full.
        let (tx, _rx) = mpsc::channel(1);
        let handle = IngestHandle {
            tx,
            wait: Duration::from_millis(200),
            queued: Arc::default(),
        };
        let first = {
            let h = handle.clone();
            tokio::spawn(async move { h.submit_metrics(vec![sample_metric()]).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            handle.submit_metrics(vec![sample_metric()]).await,
            Err(IngestError::QueueFull)
        ));
        assert!(matches!(
            first.await.unwrap(),
            Err(IngestError::Unavailable)
        ));
        // An empty batch needs no writer.
        assert!(handle.submit_events(vec![]).await.unwrap().is_empty());
        let none = handle.submit_metrics(vec![]).await.unwrap();
        assert!(none.rows.is_empty() && none.ids.is_empty());
    }

    #[test]
    fn groups_respect_the_row_limit() {
        let jobs: Vec<Job> = (0..5)
            .map(|_| Job {
                rows: Rows::Metrics(vec![sample_metric(), sample_metric()], oneshot::channel().0),
                deadline: Instant::now(),
            })
            .collect();
        let sizes: Vec<usize> = chunk_jobs(jobs, 4).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }
}
