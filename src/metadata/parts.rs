//! Uploads in parts: the SHA-256 declared for each part when its URL was signed,
//! and claiming `verifying` files for the verifier (with the reconciler's lease, so
//! each file is assembled and hashed by one instance at a time).

use std::collections::BTreeMap;

use actix::{Handler, Message};
use chrono::Duration;
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::db::DbConnection;
use super::rows::FileRow;
use super::schema::{file_parts, files};
use super::{now_micros, MetadataStore, StoreError};
use crate::domain::{File, FileId, FileStatus, Sha256};

/// Records the SHA-256 declared for parts of a file (a part asked for again with
/// another hash keeps the latest).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordPartHashes {
    /// The multipart file.
    pub file: FileId,
    /// Part number and declared SHA-256.
    pub parts: Vec<(u32, Sha256)>,
}

/// The SHA-256 declared for each part of a file, by part number.
#[derive(Message)]
#[rtype(result = "Result<BTreeMap<u32, Sha256>, StoreError>")]
pub struct GetPartHashes(pub FileId);

/// Claims up to `limit` `verifying` files no instance holds a lease on (only file
/// `only`, when given); the lease lasts `lease`.
#[derive(Message)]
#[rtype(result = "Result<Vec<File>, StoreError>")]
pub struct ClaimVerifying {
    /// Claim this file only.
    pub only: Option<FileId>,
    /// How long other instances stay away (and when a failed check is retried).
    pub lease: Duration,
    /// Batch size.
    pub limit: i64,
}

/// Extends the lease on a file still `verifying` (a long verification keeps it, so
/// no other instance claims the file meanwhile).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct ExtendLease {
    /// The file being verified.
    pub file: FileId,
    /// From now.
    pub lease: Duration,
}

#[derive(Insertable)]
#[diesel(table_name = file_parts)]
struct PartRow {
    file_id: String,
    number: i32,
    sha256: String,
}

impl Handler<RecordPartHashes> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: RecordPartHashes, _: &mut Self::Context) -> Self::Result {
        let rows: Vec<PartRow> = msg
            .parts
            .iter()
            .map(|(number, sha256)| PartRow {
                file_id: msg.file.to_string(),
                number: i32::try_from(*number).unwrap_or(i32::MAX),
                sha256: sha256.to_hex(),
            })
            .collect();
        let mut conn = self.conn()?;
        let conn: &mut DbConnection = &mut conn;
        // One row per statement: SQLite has no multi-row upsert in diesel; a parts
        // request holds at most a hundred.
        conn.transaction::<_, StoreError, _>(|conn| {
            for row in &rows {
                let upsert = diesel::insert_into(file_parts::table)
                    .values(row)
                    .on_conflict((file_parts::file_id, file_parts::number))
                    .do_update()
                    .set(file_parts::sha256.eq(excluded(file_parts::sha256)));
                // ON CONFLICT needs the concrete backend.
                match &mut *conn {
                    DbConnection::Postgresql(pg) => upsert.execute(pg)?,
                    DbConnection::Sqlite(sqlite) => upsert.execute(sqlite)?,
                };
            }
            Ok(())
        })?;
        Ok(())
    }
}

impl Handler<GetPartHashes> for MetadataStore {
    type Result = Result<BTreeMap<u32, Sha256>, StoreError>;
    fn handle(&mut self, msg: GetPartHashes, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let rows: Vec<(i32, String)> = file_parts::table
            .select((file_parts::number, file_parts::sha256))
            .filter(file_parts::file_id.eq(msg.0.to_string()))
            .load(&mut *conn)?;
        rows.into_iter()
            .map(|(number, hex)| {
                let digest = Sha256::parse_hex(&hex).map_err(|_| {
                    StoreError::Internal(format!("corrupt part hash of file {}", msg.0))
                })?;
                Ok((u32::try_from(number).unwrap_or(0), digest))
            })
            .collect()
    }
}

impl Handler<ClaimVerifying> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: ClaimVerifying, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let now = now_micros().naive_utc();
        let until = now + msg.lease;
        macro_rules! due {
            () => {
                files::table
                    .select(files::id)
                    .filter(files::status.eq(FileStatus::Verifying.as_str()))
                    .filter(
                        files::reconcile_after
                            .is_null()
                            .or(files::reconcile_after.lt(now)),
                    )
                    .order(files::updated_at.asc())
                    .limit(msg.limit)
            };
        }
        let only = msg.only.map(|id| id.to_string());
        let conn: &mut DbConnection = &mut conn;
        let rows: Vec<FileRow> = conn.transaction(|conn| {
            // As for overdue files: Postgres skips rows another instance is claiming.
            let ids: Vec<String> = match (&mut *conn, &only) {
                (DbConnection::Postgresql(pg), Some(id)) => due!()
                    .filter(files::id.eq(id))
                    .for_update()
                    .skip_locked()
                    .load(pg)?,
                (DbConnection::Postgresql(pg), None) => {
                    due!().for_update().skip_locked().load(pg)?
                }
                (DbConnection::Sqlite(sqlite), Some(id)) => {
                    due!().filter(files::id.eq(id)).load(sqlite)?
                }
                (DbConnection::Sqlite(sqlite), None) => due!().load(sqlite)?,
            };
            super::reconcile::lease(conn, &ids, until)
        })?;
        rows.into_iter()
            .map(|r| r.into_file().map_err(StoreError::from))
            .collect()
    }
}

impl Handler<ExtendLease> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: ExtendLease, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let until = now_micros().naive_utc() + msg.lease;
        diesel::update(
            files::table
                .filter(files::id.eq(msg.file.to_string()))
                .filter(files::status.eq(FileStatus::Verifying.as_str())),
        )
        .set(files::reconcile_after.eq(until))
        .execute(&mut *conn)?;
        Ok(())
    }
}
