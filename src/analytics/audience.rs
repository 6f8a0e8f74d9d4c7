//! Who did what: distinct users of a window, and funnels (ordered steps of
//! event types within a time limit per user). Both are exact, computed from
//! the stored events of the window; a funnel streams them per user in
//! batches, so memory stays flat.

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::views::{Funnel, FunnelStep, TypeUniques, Uniques};
use super::{Invalid, QueryError};
use crate::entity::events;
use crate::time::{micros, now};

/// Rows per round trip of a funnel.
const BATCH: u64 = 10_000;
const MAX_STEPS: usize = 10;
/// A year and a day.
const MAX_WINDOW_DAYS: i64 = 366;

/// `[from, to)`: by default the last 24 hours.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
}

impl Window {
    pub fn parse(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Self, Invalid> {
        let to = to.map(micros).unwrap_or_else(now);
        let from = from.map(micros).unwrap_or(to - Duration::hours(24));
        if from >= to {
            return Err(Invalid::new("from must be before to"));
        }
        if to - from > Duration::days(MAX_WINDOW_DAYS) {
            return Err(Invalid::new(format!(
                "the window must be at most {MAX_WINDOW_DAYS} days"
            )));
        }
        Ok(Window { from, to })
    }
}

/// Funnel steps: 2..=10 event types, and the time the steps must fit in
/// from the first.
#[derive(Debug, Clone)]
pub struct Steps {
    types: Vec<String>,
    within: Duration,
}

impl Steps {
    pub fn parse(steps: &str, within_seconds: Option<i64>) -> Result<Self, Invalid> {
        let types: Vec<String> = steps.split(',').map(|s| s.trim().to_string()).collect();
        if !(2..=MAX_STEPS).contains(&types.len())
            || types
                .iter()
                .any(|t| t.is_empty() || t.chars().count() > 100)
        {
            return Err(Invalid::new(format!(
                "steps must be 2 to {MAX_STEPS} comma-separated event types of 1 to 100 characters"
            )));
        }
        let within = within_seconds.unwrap_or(86_400);
        if !(1..=MAX_WINDOW_DAYS * 86_400).contains(&within) {
            return Err(Invalid::new(format!(
                "within_seconds must be between 1 and {}",
                MAX_WINDOW_DAYS * 86_400
            )));
        }
        Ok(Steps {
            types,
            within: Duration::seconds(within),
        })
    }
}

fn in_window(w: Window) -> sea_orm::Select<events::Entity> {
    use events::Column as C;
    events::Entity::find()
        .filter(C::Timestamp.gte(w.from))
        .filter(C::Timestamp.lt(w.to))
        .filter(C::UserId.is_not_null())
}

/// Distinct users of the window, overall and per event type (most first);
/// `event_type` narrows both to one type. Exact, from the hourly presence
/// tables and the raw rows of the window's partial hours.
pub async fn uniques(
    db: &DatabaseConnection,
    w: Window,
    event_type: Option<String>,
) -> Result<Uniques, QueryError> {
    let (overall, mut by_type) =
        super::counters::distinct_users(db, w.from, w.to, event_type.as_deref()).await?;
    by_type.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Uniques {
        from: w.from.and_utc(),
        to: w.to.and_utc(),
        unique_users: overall,
        by_event_type: by_type
            .into_iter()
            .map(|(event_type, unique_users)| TypeUniques {
                event_type,
                unique_users,
            })
            .collect(),
        exact: true,
    })
}

/// One user's progress through the steps, fed their events in time order.
/// `starts[k]` is the latest first-step time of a sequence that reached
/// step k: the latest start leaves the most time for the steps after it
/// (the rule of ClickHouse's `windowFunnel`).
struct Progress<'a> {
    steps: &'a Steps,
    starts: Vec<Option<NaiveDateTime>>,
}

impl<'a> Progress<'a> {
    fn new(steps: &'a Steps) -> Self {
        Progress {
            steps,
            starts: vec![None; steps.types.len()],
        }
    }

    fn event(&mut self, event_type: &str, at: NaiveDateTime) {
        // Later steps first, so one event never counts for two steps in a row.
        for k in (1..self.steps.types.len()).rev() {
            if self.steps.types[k] != event_type {
                continue;
            }
            if let Some(start) = self.starts[k - 1]
                && at - start <= self.steps.within
            {
                self.starts[k] = Ord::max(self.starts[k], Some(start));
            }
        }
        if self.steps.types[0] == event_type {
            self.starts[0] = Some(at);
        }
    }

    /// Steps reached (0 when the first never happened).
    fn reached(&self) -> usize {
        self.starts
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |k| k + 1)
    }
}

/// How many users reached each step of the funnel in the window.
pub async fn funnel(
    db: &DatabaseConnection,
    w: Window,
    steps: Steps,
) -> Result<Funnel, QueryError> {
    use events::Column as C;
    let mut reached = vec![0i64; steps.types.len()];
    let mut wanted: Vec<&str> = steps.types.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut current: Option<(i32, Progress)> = None;
    let mut after: Option<(i32, NaiveDateTime, i64)> = None;
    let mut finish = |p: &Progress| {
        for count in reached.iter_mut().take(p.reached()) {
            *count += 1;
        }
    };
    loop {
        let mut find = in_window(w).filter(C::EventType.is_in(wanted.iter().copied()));
        if let Some((u, t, id)) = after {
            find = find.filter(
                Condition::any()
                    .add(C::UserId.gt(u))
                    .add(
                        Condition::all()
                            .add(C::UserId.eq(u))
                            .add(C::Timestamp.gt(t)),
                    )
                    .add(
                        Condition::all()
                            .add(C::UserId.eq(u))
                            .add(C::Timestamp.eq(t))
                            .add(C::Id.gt(id)),
                    ),
            );
        }
        let rows: Vec<(Option<i32>, String, NaiveDateTime, i64)> = find
            .select_only()
            .columns([C::UserId, C::EventType, C::Timestamp, C::Id])
            .order_by_asc(C::UserId)
            .order_by_asc(C::Timestamp)
            .order_by_asc(C::Id)
            .limit(BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.0.unwrap_or_default(), last.2, last.3));
        for (user, event_type, at, _) in rows {
            let user = user.unwrap_or_default();
            match &mut current {
                Some((u, p)) if *u == user => p.event(&event_type, at),
                _ => {
                    if let Some((_, p)) = current.take() {
                        finish(&p);
                    }
                    let mut p = Progress::new(&steps);
                    p.event(&event_type, at);
                    current = Some((user, p));
                }
            }
        }
    }
    if let Some((_, p)) = current.take() {
        finish(&p);
    }
    let first = reached[0];
    Ok(Funnel {
        from: w.from.and_utc(),
        to: w.to.and_utc(),
        within_seconds: steps.within.num_seconds(),
        steps: steps
            .types
            .iter()
            .zip(&reached)
            .map(|(event_type, &users)| FunnelStep {
                event_type: event_type.clone(),
                users,
                of_first: if first > 0 {
                    users as f64 / first as f64
                } else {
                    0.0
                },
            })
            .collect(),
        exact: true,
    })
}

/// The same funnel, computed naively from one user's whole event list: the
/// reference the streaming rule is tested against.
#[cfg(test)]
fn reached_naively(steps: &Steps, events: &[(&str, NaiveDateTime)]) -> usize {
    let mut best = 0;
    for (i, (t, start)) in events.iter().enumerate() {
        if *t != steps.types[0] {
            continue;
        }
        let mut level = 1;
        for (t, at) in &events[i + 1..] {
            if level < steps.types.len() && *t == steps.types[level] && *at - *start <= steps.within
            {
                level += 1;
            }
        }
        best = Ord::max(best, level);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> NaiveDateTime {
        NaiveDateTime::default() + Duration::minutes(minute)
    }

    fn run(steps: &Steps, events: &[(&str, NaiveDateTime)]) -> usize {
        let mut p = Progress::new(steps);
        for (t, a) in events {
            p.event(t, *a);
        }
        p.reached()
    }

    #[test]
    fn funnel_progress_matches_the_naive_rule() {
        let steps = Steps::parse("a,b,c", Some(600)).unwrap();
        let cases: Vec<(Vec<(&str, NaiveDateTime)>, usize)> = vec![
            (vec![("a", at(0)), ("b", at(1)), ("c", at(2))], 3),
            (vec![("a", at(0)), ("c", at(1))], 1),
            (vec![("b", at(0)), ("a", at(1)), ("b", at(2))], 2),
            (vec![("a", at(0)), ("b", at(11))], 1),
            // The later start leaves time for b.
            (vec![("a", at(0)), ("a", at(8)), ("b", at(15))], 2),
            (vec![("c", at(0)), ("b", at(1))], 0),
        ];
        for (events, want) in &cases {
            assert_eq!(run(&steps, events), *want, "{events:?}");
            assert_eq!(reached_naively(&steps, events), *want, "{events:?}");
        }
        // A type repeated in the steps needs two events.
        let again = Steps::parse("a,b,a", Some(600)).unwrap();
        assert_eq!(run(&again, &[("a", at(0)), ("b", at(1))]), 2);
        assert_eq!(run(&again, &[("a", at(0)), ("b", at(1)), ("a", at(2))]), 3);
        assert_eq!(run(&again, &[("a", at(0)), ("a", at(1))]), 1);
    }

    #[test]
    fn steps_and_windows_are_checked() {
        assert!(Steps::parse("a", None).is_err());
        assert!(Steps::parse("a,,b", None).is_err());
        assert!(Steps::parse("a,b", Some(0)).is_err());
        assert!(Steps::parse(&["x"; 11].join(","), None).is_err());
        assert_eq!(Steps::parse("a, b", None).unwrap().types, ["a", "b"]);
        let t = Utc::now();
        assert!(Window::parse(Some(t), Some(t)).is_err());
        assert!(Window::parse(Some(t - Duration::days(400)), Some(t)).is_err());
    }
}
