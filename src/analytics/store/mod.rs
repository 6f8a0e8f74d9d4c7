//! Writes one group of ingest jobs atomically: the rows and the minute and
//! hour counters they add. Postgres takes the group as one statement
//! (`postgres`); SQLite in one transaction of multi-row statements.

mod postgres;

pub(super) use postgres::Held;

use std::collections::HashMap;

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter,
};

use super::queue::{Job, Rows};
use super::{Event, Metric, NewEvent, NewMetric, counters};
use crate::entity::{events, metrics};

/// Rows per multi-row statement (SQLite inserts, `event_id` lookups): far
/// below the bind-parameter limits. Postgres inserts a group as arrays.
pub(super) const ROWS_PER_STATEMENT: usize = 1000;

/// A group's stored events and metric ids, in job order, and the events
/// stored by it (not before) in id order when asked for.
pub(super) struct Committed {
    pub(super) events: std::vec::IntoIter<Event>,
    pub(super) metric_ids: std::vec::IntoIter<i64>,
    pub(super) new_events: Vec<Event>,
}

pub(super) async fn commit(
    db: &DatabaseConnection,
    held: &mut Held,
    jobs: &[Job],
    want_new: bool,
) -> Result<Committed, DbErr> {
    let mut new_events: Vec<&NewEvent> = vec![];
    let mut new_metrics: Vec<&NewMetric> = vec![];
    for job in jobs {
        match &job.rows {
            Rows::Events(v, _) => new_events.extend(v),
            Rows::Metrics(v, _) => new_metrics.extend(v),
        }
    }
    let (plan, stored, metrics) = if db.get_database_backend() == DbBackend::Postgres {
        let plan = EventPlan::new(db, &new_events).await?;
        let (stored, metrics) = postgres::write(db, held, &new_events, &plan, &new_metrics).await?;
        (plan, stored, metrics)
    } else {
        let txn = crate::db::begin_write(db).await?;
        let plan = EventPlan::new(&txn, &new_events).await?;
        let stored = insert_events(&txn, &new_events, &plan).await?;
        let metrics = insert_metrics(&txn, &new_metrics).await?;
        counters::add_metrics(&txn, &new_metrics).await?;
        txn.commit().await?;
        (plan, stored, metrics)
    };
    let fresh = if want_new {
        plan.fresh.iter().map(|i| stored[i].clone()).collect()
    } else {
        vec![]
    };
    Ok(Committed {
        events: plan.answers(&new_events, &stored).into_iter(),
        metric_ids: metrics.into_iter(),
        new_events: fresh,
    })
}

fn event_row(e: &NewEvent) -> events::ActiveModel {
    events::ActiveModel {
        id: NotSet,
        user_id: Set(e.user_id),
        event_type: Set(e.event_type.clone()),
        event_data: Set(e.event_data.clone()),
        timestamp: Set(e.timestamp),
        session_id: Set(e.session_id.clone()),
        ip_address: Set(e.ip_address.clone()),
        user_agent: Set(e.user_agent.clone()),
        event_id: Set(e.event_id.clone()),
        api_key_id: Set(e.api_key_id),
    }
}

pub(super) fn stored_event(id: i64, e: &NewEvent) -> Event {
    Event {
        id,
        user_id: e.user_id,
        event_type: e.event_type.clone(),
        event_data: e.event_data.clone(),
        timestamp: e.timestamp,
        session_id: e.session_id.clone(),
        ip_address: e.ip_address.clone(),
        user_agent: e.user_agent.clone(),
        event_id: e.event_id.clone(),
        api_key_id: e.api_key_id,
    }
}

/// Which rows of a group need storing: an `event_id` already stored is
/// answered with the stored row, and a repeat within the group with the
/// row of its first occurrence.
pub(super) struct EventPlan<'a> {
    known: HashMap<String, Event>,
    /// Indexes of the rows to insert, in group order.
    pub(super) fresh: Vec<usize>,
    first_of: HashMap<&'a str, usize>,
}

impl<'a> EventPlan<'a> {
    async fn new<C: ConnectionTrait>(conn: &C, rows: &[&'a NewEvent]) -> Result<Self, DbErr> {
        let ids: Vec<String> = rows.iter().filter_map(|r| r.event_id.clone()).collect();
        let mut known: HashMap<String, Event> = HashMap::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let found = if conn.get_database_backend() == DbBackend::Postgres {
                postgres::stored_with_event_ids(conn, chunk).await?
            } else {
                events::Entity::find()
                    .filter(events::Column::EventId.is_in(chunk.iter().cloned()))
                    .all(conn)
                    .await?
            };
            for row in found {
                if let Some(id) = row.event_id.clone() {
                    known.insert(id, row);
                }
            }
        }
        let mut fresh: Vec<usize> = vec![];
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            match row.event_id.as_deref() {
                Some(id) if known.contains_key(id) || first_of.contains_key(id) => {}
                Some(id) => {
                    first_of.insert(id, i);
                    fresh.push(i);
                }
                None => fresh.push(i),
            }
        }
        Ok(EventPlan {
            known,
            fresh,
            first_of,
        })
    }

    /// Every row's answer, given the rows stored now (by index into the group).
    pub(super) fn answers(&self, rows: &[&NewEvent], stored: &HashMap<usize, Event>) -> Vec<Event> {
        (0..rows.len())
            .map(|i| match rows[i].event_id.as_deref() {
                Some(id) if self.known.contains_key(id) => self.known[id].clone(),
                Some(id) => stored[&self.first_of[id]].clone(),
                None => stored[&i].clone(),
            })
            .collect()
    }
}

/// Inserts the plan's fresh events; answers them by index into the group.
async fn insert_events(
    txn: &DatabaseTransaction,
    rows: &[&NewEvent],
    plan: &EventPlan<'_>,
) -> Result<HashMap<usize, Event>, DbErr> {
    let mut stored: HashMap<usize, Event> = HashMap::with_capacity(plan.fresh.len());
    for chunk in plan.fresh.chunks(ROWS_PER_STATEMENT) {
        let keys = events::Entity::insert_many(chunk.iter().map(|&i| event_row(rows[i])))
            .exec_with_returning_keys(txn)
            .await?;
        if keys.len() != chunk.len() {
            return Err(DbErr::Custom("insert returned fewer ids than rows".into()));
        }
        for (&i, id) in chunk.iter().zip(keys) {
            stored.insert(i, stored_event(id, rows[i]));
        }
    }
    // Only rows stored now count; retried event_ids were counted before.
    let new: Vec<&Event> = plan.fresh.iter().map(|i| &stored[i]).collect();
    counters::add_events(txn, &new).await?;
    Ok(stored)
}

/// Inserts the metrics; answers their ids in order.
async fn insert_metrics(txn: &DatabaseTransaction, rows: &[&NewMetric]) -> Result<Vec<i64>, DbErr> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let models = chunk.iter().map(|m| metrics::ActiveModel {
            id: NotSet,
            metric_name: Set(m.metric_name.clone()),
            metric_value: Set(m.metric_value),
            metric_type: Set(m.metric_type.as_str().to_string()),
            user_id: Set(m.user_id),
            service_name: Set(m.service_name.clone()),
            endpoint: Set(m.endpoint.clone()),
            labels: Set(m.labels.clone()),
            timestamp: Set(m.timestamp),
            api_key_id: Set(m.api_key_id),
        });
        let keys = metrics::Entity::insert_many(models)
            .exec_with_returning_keys(txn)
            .await?;
        if keys.len() != chunk.len() {
            return Err(DbErr::Custom("insert returned fewer ids than rows".into()));
        }
        out.extend(keys);
    }
    Ok(out)
}

/// A metric as stored, from its new row (moved: a batch's texts are not
/// copied again).
pub(super) fn stored_metric(id: i64, m: NewMetric) -> Metric {
    Metric {
        id,
        metric_name: m.metric_name,
        metric_value: m.metric_value,
        metric_type: m.metric_type.as_str().to_string(),
        user_id: m.user_id,
        service_name: m.service_name,
        endpoint: m.endpoint,
        labels: m.labels,
        timestamp: m.timestamp,
        api_key_id: m.api_key_id,
    }
}
