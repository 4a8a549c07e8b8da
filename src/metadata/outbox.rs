//! The outbox: listing it (`valet events`) and the queries the relay
//! ([`crate::notifier::relay`]) runs: claim rows to
//! publish (each file's events in order, one instance per row), mark them
//! published or failed, prune, measure the backlog.

use actix::{Handler, Message};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamp};

use super::db::DbConnection;
use super::rows::OutboxEntry;
use super::schema::outbox;
use super::{now_micros, MetadataStore, StoreError};

/// Claims up to `limit` unpublished rows, oldest first, for `lease`. Only the
/// oldest unpublished row of each file is eligible, so a file's events are
/// published in order even by several instances.
#[derive(Message)]
#[rtype(result = "Result<Vec<OutboxEntry>, StoreError>")]
pub struct ClaimOutbox {
    /// Batch size.
    pub limit: i64,
    /// How long other instances stay off the claimed rows.
    pub lease: Duration,
}

/// The broker confirmed these rows.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct MarkPublished(pub Vec<i64>);

/// Publishing `failed` failed with `error`; `release` go back to the pool unpublished.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct PublishFailed {
    /// The row whose publish failed (none when the relay is only stopping).
    pub failed: Option<i64>,
    /// Why.
    pub error: String,
    /// Claimed rows not attempted, released for the next round.
    pub release: Vec<i64>,
}

/// Deletes up to `limit` rows published before `cutoff`; returns how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct PrunePublished {
    /// Rows published before this go.
    pub cutoff: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

/// Unpublished rows and the creation time of the oldest.
#[derive(Message)]
#[rtype(result = "Result<(i64, Option<DateTime<Utc>>), StoreError>")]
pub struct OutboxBacklog;

/// The claim, as one statement per database: the eligible rows (unpublished,
/// unclaimed or with an expired claim, the oldest unpublished of their file, and,
/// for a row with an `after_key`, none of that key's older rows unpublished) are
/// locked, skipping rows another instance is claiming, and stamped.
const CLAIM_POSTGRES: &str = "\
    UPDATE outbox SET claimed_until = $1 WHERE seq IN ( \
        SELECT o.seq FROM outbox o \
        WHERE o.published_at IS NULL \
          AND (o.claimed_until IS NULL OR o.claimed_until < $2) \
          AND NOT EXISTS (SELECT 1 FROM outbox e \
                          WHERE e.file_id = o.file_id AND e.published_at IS NULL AND e.seq < o.seq) \
          AND (o.after_key IS NULL OR NOT EXISTS (SELECT 1 FROM outbox a \
                          WHERE a.file_id = o.after_key AND a.published_at IS NULL AND a.seq < o.seq)) \
        ORDER BY o.seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
    RETURNING seq, event_id, event_type, file_id, tenant_id, device_id, payload, created_at, \
              published_at, attempts, last_error";

/// SQLite has one writer at a time, so the plain statement is enough.
const CLAIM_SQLITE: &str = "\
    UPDATE outbox SET claimed_until = ? WHERE seq IN ( \
        SELECT o.seq FROM outbox o \
        WHERE o.published_at IS NULL \
          AND (o.claimed_until IS NULL OR o.claimed_until < ?) \
          AND NOT EXISTS (SELECT 1 FROM outbox e \
                          WHERE e.file_id = o.file_id AND e.published_at IS NULL AND e.seq < o.seq) \
          AND (o.after_key IS NULL OR NOT EXISTS (SELECT 1 FROM outbox a \
                          WHERE a.file_id = o.after_key AND a.published_at IS NULL AND a.seq < o.seq)) \
        ORDER BY o.seq LIMIT ?) \
    RETURNING seq, event_id, event_type, file_id, tenant_id, device_id, payload, created_at, \
              published_at, attempts, last_error";

impl Handler<ClaimOutbox> for MetadataStore {
    type Result = Result<Vec<OutboxEntry>, StoreError>;
    fn handle(&mut self, msg: ClaimOutbox, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let now = now_micros().naive_utc();
        let until = now + msg.lease;
        let mut rows: Vec<OutboxEntry> = match &mut *conn {
            DbConnection::Postgresql(pg) => diesel::sql_query(CLAIM_POSTGRES)
                .bind::<Timestamp, _>(until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(msg.limit)
                .load(pg)?,
            DbConnection::Sqlite(sqlite) => diesel::sql_query(CLAIM_SQLITE)
                .bind::<Timestamp, _>(until)
                .bind::<Timestamp, _>(now)
                .bind::<BigInt, _>(msg.limit)
                .load(sqlite)?,
        };
        // RETURNING gives no order guarantee.
        rows.sort_by_key(|row| row.seq);
        Ok(rows)
    }
}

impl Handler<MarkPublished> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: MarkPublished, _: &mut Self::Context) -> Self::Result {
        if msg.0.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        diesel::update(outbox::table.filter(outbox::seq.eq_any(&msg.0)))
            .set((
                outbox::published_at.eq(Some(now_micros().naive_utc())),
                outbox::claimed_until.eq(None::<NaiveDateTime>),
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::last_error.eq(None::<String>),
            ))
            .execute(&mut *conn)?;
        Ok(())
    }
}

impl Handler<PublishFailed> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: PublishFailed, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            if let Some(failed) = msg.failed {
                diesel::update(outbox::table.filter(outbox::seq.eq(failed)))
                    .set((
                        outbox::attempts.eq(outbox::attempts + 1),
                        outbox::last_error
                            .eq(Some(msg.error.chars().take(1000).collect::<String>())),
                        outbox::claimed_until.eq(None::<NaiveDateTime>),
                    ))
                    .execute(conn)?;
            }
            if !msg.release.is_empty() {
                diesel::update(outbox::table.filter(outbox::seq.eq_any(&msg.release)))
                    .set(outbox::claimed_until.eq(None::<NaiveDateTime>))
                    .execute(conn)?;
            }
            Ok::<_, StoreError>(())
        })
    }
}

impl Handler<PrunePublished> for MetadataStore {
    type Result = Result<usize, StoreError>;
    fn handle(&mut self, msg: PrunePublished, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            let due: Vec<i64> = outbox::table
                .select(outbox::seq)
                .filter(outbox::published_at.lt(msg.cutoff.naive_utc()))
                .order(outbox::seq.asc())
                .limit(msg.limit)
                .load(conn)?;
            Ok(diesel::delete(outbox::table.filter(outbox::seq.eq_any(&due))).execute(conn)?)
        })
    }
}

impl Handler<OutboxBacklog> for MetadataStore {
    type Result = Result<(i64, Option<DateTime<Utc>>), StoreError>;
    fn handle(&mut self, _: OutboxBacklog, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let waiting = outbox::table.filter(outbox::published_at.is_null());
        let count: i64 = waiting.count().get_result(&mut *conn)?;
        let oldest: Option<NaiveDateTime> = waiting
            .select(diesel::dsl::min(outbox::created_at))
            .first(&mut *conn)?;
        Ok((count, oldest.map(|t| t.and_utc())))
    }
}

/// Outbox entries, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<OutboxEntry>, StoreError>")]
pub struct ListOutbox {
    /// Include entries already published.
    pub include_published: bool,
    /// At most this many.
    pub limit: i64,
}

impl Handler<ListOutbox> for MetadataStore {
    type Result = Result<Vec<OutboxEntry>, StoreError>;
    fn handle(&mut self, msg: ListOutbox, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let mut query = outbox::table
            .select(OutboxEntry::as_select())
            .order(outbox::seq.asc())
            .limit(msg.limit)
            .into_boxed();
        if !msg.include_published {
            query = query.filter(outbox::published_at.is_null());
        }
        Ok(query.load(&mut *conn)?)
    }
}
