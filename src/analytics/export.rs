//! Export of events and metrics as NDJSON or CSV. Rows go out in id order,
//! a batch at a time, so memory stays flat whatever the window. The set is
//! fixed when the export starts (rows up to the largest id then matching),
//! and an interrupted export resumes after the last id it delivered.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use super::domain::{EventFilter, MetricFilter};
use super::queries::{events_matching, metrics_matching};
use super::views::{EventResponse, MetricResponse};
use super::{Invalid, QueryError};
use crate::entity::{events, metrics};
use crate::time::micros;

/// Rows per database round trip.
const BATCH: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(value: Option<&str>) -> Result<Self, Invalid> {
        match value.unwrap_or("ndjson") {
            "ndjson" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            _ => Err(Invalid::new("format must be ndjson or csv")),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Rows {
    Events(EventFilter),
    Metrics(MetricFilter),
}

#[derive(Debug, Clone)]
pub struct Export {
    rows: Rows,
    format: Format,
    from: Option<NaiveDateTime>,
    to: Option<NaiveDateTime>,
    /// Rows with a larger id only (resuming).
    after_id: i64,
    /// Rows up to this id only: a resumed export keeps the set it started.
    through_id: Option<i64>,
}

/// What an export will deliver, fixed when it starts.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub rows: u64,
    /// The largest id delivered; none when there is nothing to deliver.
    pub through_id: Option<i64>,
}

const EVENT_COLUMNS: [&str; 8] = [
    "id",
    "event_id",
    "event_type",
    "user_id",
    "session_id",
    "api_key_id",
    "timestamp",
    "event_data",
];
const METRIC_COLUMNS: [&str; 10] = [
    "id",
    "metric_name",
    "metric_value",
    "metric_type",
    "user_id",
    "service_name",
    "endpoint",
    "api_key_id",
    "timestamp",
    "labels",
];

impl Export {
    pub fn new(
        rows: Rows,
        format: Format,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after_id: Option<i64>,
        through_id: Option<i64>,
    ) -> Result<Self, Invalid> {
        if from.zip(to).is_some_and(|(f, t)| f > t) {
            return Err(Invalid::new("from must not be after to"));
        }
        if after_id.is_some_and(|v| v < 0) || through_id.is_some_and(|v| v < 1) {
            return Err(Invalid::new(
                "after_id must be at least 0 and through_id at least 1",
            ));
        }
        Ok(Export {
            rows,
            format,
            from: from.map(micros),
            to: to.map(micros),
            after_id: after_id.unwrap_or(0),
            through_id,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn after_id(&self) -> i64 {
        self.after_id
    }

    /// Counts what will go out: rows after `after_id` up to `through_id`
    /// (given when resuming, else the largest matching id now).
    pub async fn snapshot(&self, db: &DatabaseConnection) -> Result<Snapshot, QueryError> {
        let (after, through) = (self.after_id, self.through_id);
        let (rows, max) = match &self.rows {
            Rows::Events(f) => {
                let cols = (events::Column::Id, events::Column::Timestamp);
                count_and_max(
                    db,
                    self.windowed(events_matching(f.clone()), cols, after, through),
                    cols.0,
                )
                .await?
            }
            Rows::Metrics(f) => {
                let cols = (metrics::Column::Id, metrics::Column::Timestamp);
                count_and_max(
                    db,
                    self.windowed(metrics_matching(f.clone()), cols, after, through),
                    cols.0,
                )
                .await?
            }
        };
        Ok(Snapshot {
            rows: rows as u64,
            through_id: max,
        })
    }

    /// The CSV header line; NDJSON has none.
    pub fn header(&self) -> Option<Vec<u8>> {
        (self.format == Format::Csv).then(|| {
            let columns: &[&str] = match self.rows {
                Rows::Events(_) => &EVENT_COLUMNS,
                Rows::Metrics(_) => &METRIC_COLUMNS,
            };
            let mut out = csv::Writer::from_writer(vec![]);
            // Writing to memory cannot fail.
            let _ = out.write_record(columns);
            out.into_inner().unwrap_or_default()
        })
    }

    /// The next batch after `after` (through `through`), formatted, and the
    /// last id in it; `None` when the export is done.
    pub async fn batch(
        &self,
        db: &DatabaseConnection,
        after: i64,
        through: i64,
    ) -> Result<Option<(Vec<u8>, i64)>, QueryError> {
        let mut out = Output::new(self.format);
        let through = Some(through);
        let last = match &self.rows {
            Rows::Events(f) => {
                let cols = (events::Column::Id, events::Column::Timestamp);
                let find = self.windowed(events_matching(f.clone()), cols, after, through);
                next_batch(db, find, cols.0, &mut out).await?
            }
            Rows::Metrics(f) => {
                let cols = (metrics::Column::Id, metrics::Column::Timestamp);
                let find = self.windowed(metrics_matching(f.clone()), cols, after, through);
                next_batch(db, find, cols.0, &mut out).await?
            }
        };
        Ok(last.map(|id| (out.finish(), id)))
    }

    /// `find` narrowed to ids in (`after`, `through`] and the export's window.
    fn windowed<E: EntityTrait>(
        &self,
        find: Select<E>,
        (id, timestamp): (E::Column, E::Column),
        after: i64,
        through: Option<i64>,
    ) -> Select<E> {
        let mut find = find.filter(id.gt(after));
        if let Some(t) = through {
            find = find.filter(id.lte(t));
        }
        if let Some(v) = self.from {
            find = find.filter(timestamp.gte(v));
        }
        if let Some(v) = self.to {
            find = find.filter(timestamp.lt(v));
        }
        find
    }
}

async fn count_and_max<E: EntityTrait>(
    db: &DatabaseConnection,
    find: Select<E>,
    id: E::Column,
) -> Result<(i64, Option<i64>), QueryError> {
    Ok(find
        .select_only()
        .column_as(Expr::col(id).count(), "n")
        .column_as(Expr::col(id).max(), "m")
        .into_tuple()
        .one(db)
        .await?
        .unwrap_or((0, None)))
}

/// A stored row as an export writes it.
trait Exported {
    fn id(&self) -> i64;
    fn write(&self, out: &mut Output);
}

impl Exported for events::Model {
    fn id(&self) -> i64 {
        self.id
    }
    fn write(&self, out: &mut Output) {
        out.event(&EventResponse::from(self));
    }
}

impl Exported for metrics::Model {
    fn id(&self) -> i64 {
        self.id
    }
    fn write(&self, out: &mut Output) {
        out.metric(&MetricResponse::from(self));
    }
}

/// Writes the next `BATCH` rows of `find` in id order; answers the last id.
async fn next_batch<E>(
    db: &DatabaseConnection,
    find: Select<E>,
    id: E::Column,
    out: &mut Output,
) -> Result<Option<i64>, QueryError>
where
    E: EntityTrait,
    E::Model: Exported,
{
    let rows = find.order_by_asc(id).limit(BATCH).all(db).await?;
    for row in &rows {
        row.write(out);
    }
    Ok(rows.last().map(Exported::id))
}

/// One batch being formatted.
enum Output {
    Ndjson(Vec<u8>),
    Csv(Box<csv::Writer<Vec<u8>>>),
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Output {
    fn new(format: Format) -> Self {
        match format {
            Format::Ndjson => Output::Ndjson(Vec::with_capacity(512 * BATCH as usize)),
            Format::Csv => Output::Csv(Box::new(csv::Writer::from_writer(vec![]))),
        }
    }

    // Writes go to memory, which cannot fail: the results are ignored.
    fn event(&mut self, e: &EventResponse) {
        match self {
            Output::Ndjson(buf) => {
                let _ = serde_json::to_writer(&mut *buf, e);
                buf.push(b'\n');
            }
            Output::Csv(w) => {
                let _ = w.write_record([
                    e.id.to_string(),
                    opt(&e.event_id),
                    e.event_type.clone(),
                    opt(&e.user_id),
                    opt(&e.session_id),
                    opt(&e.api_key_id),
                    rfc3339(&e.timestamp),
                    e.event_data.to_string(),
                ]);
            }
        }
    }

    fn metric(&mut self, m: &MetricResponse) {
        match self {
            Output::Ndjson(buf) => {
                let _ = serde_json::to_writer(&mut *buf, m);
                buf.push(b'\n');
            }
            Output::Csv(w) => {
                let _ = w.write_record([
                    m.id.to_string(),
                    m.metric_name.clone(),
                    m.metric_value.to_string(),
                    m.metric_type.clone(),
                    opt(&m.user_id),
                    opt(&m.service_name),
                    opt(&m.endpoint),
                    opt(&m.api_key_id),
                    rfc3339(&m.timestamp),
                    m.labels.to_string(),
                ]);
            }
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Output::Ndjson(buf) => buf,
            Output::Csv(w) => w.into_inner().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut out = Output::new(Format::Csv);
        out.event(&EventResponse {
            id: 7,
            event_type: "a,b".into(),
            event_data: serde_json::json!({"q": "say \"hi\"\nbye"}),
            user_id: None,
            session_id: Some("s".into()),
            event_id: None,
            timestamp: DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
                .unwrap()
                .to_utc(),
            api_key_id: Some(3),
        });
        let text = String::from_utf8(out.finish()).unwrap();
        assert_eq!(
            text,
            "7,,\"a,b\",,s,3,2026-12-02T10:00:00.000000Z,\"{\"\"q\"\":\"\"say \\\"\"hi\\\"\"\\nbye\"\"}\"\n"
        );
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[2], "a,b");
        let data: serde_json::Value = serde_json::from_str(&record[7]).unwrap();
        assert_eq!(data["q"], "say \"hi\"\nbye");
    }

    #[test]
    fn formats_parse_and_bad_ones_are_named() {
        assert_eq!(Format::parse(None).unwrap(), Format::Ndjson);
        assert_eq!(Format::parse(Some("csv")).unwrap(), Format::Csv);
        assert!(
            Format::parse(Some("xml"))
                .unwrap_err()
                .0
                .contains("ndjson or csv")
        );
    }
}
