//! Usage counters per tenant and per device root: what is stored (`used`: uploaded
//! files) and promised (`reserved`: pending or verifying files). They change in the
//! same transaction as the file records they count, so they are exact; a quota check
//! locks the counter rows it reads (`FOR UPDATE` on PostgreSQL), so instances racing
//! for the last bytes of a quota never over-commit it.

use std::collections::{BTreeMap, BTreeSet};

use actix::{Handler, Message};
use diesel::prelude::*;

use super::db::DbConnection;
use super::schema::usage_counters;
use super::{MetadataStore, StoreError};
use crate::domain::{DeviceId, File, FileStatus, TenantId};

/// The `device_id` of a tenant's total row.
const TENANT_TOTAL: &str = "";

/// The quotas a new file is checked against (unset: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Bytes the tenant may hold.
    pub max_bytes: Option<u64>,
    /// Files the tenant may hold.
    pub max_files: Option<u64>,
    /// Bytes each device root may hold.
    pub device_max_bytes: Option<u64>,
    /// Files each device root may hold.
    pub device_max_files: Option<u64>,
}

/// The quota a new file would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    /// The tenant's bytes.
    MaxBytes,
    /// The tenant's files.
    MaxFiles,
    /// The device root's bytes.
    DeviceMaxBytes,
    /// The device root's files.
    DeviceMaxFiles,
}

impl QuotaLimit {
    /// The configuration key of the limit (`policy.…`).
    pub fn as_str(&self) -> &'static str {
        match self {
            QuotaLimit::MaxBytes => "max_bytes",
            QuotaLimit::MaxFiles => "max_files",
            QuotaLimit::DeviceMaxBytes => "device_max_bytes",
            QuotaLimit::DeviceMaxFiles => "device_max_files",
        }
    }
}

/// What a tenant or a device root holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Queryable)]
pub struct Usage {
    /// Bytes of uploaded files.
    pub bytes_used: i64,
    /// Uploaded files.
    pub files_used: i64,
    /// Bytes of pending (or verifying) files.
    pub bytes_reserved: i64,
    /// Pending (or verifying) files.
    pub files_reserved: i64,
}

impl Usage {
    fn bytes(&self) -> i64 {
        self.bytes_used + self.bytes_reserved
    }

    fn files(&self) -> i64 {
        self.files_used + self.files_reserved
    }
}

/// A tenant's usage, and a page of its device roots' (ordered by device id).
#[derive(Message)]
#[rtype(result = "Result<(Usage, Vec<(DeviceId, Usage)>), StoreError>")]
pub struct GetUsage {
    /// Whose usage.
    pub tenant: TenantId,
    /// Only this device (a device asking about itself), else every device.
    pub device: Option<DeviceId>,
    /// Devices after this id (the page cursor).
    pub after: Option<DeviceId>,
    /// Page size.
    pub limit: i64,
}

type Key = (String, String);

fn keys_of(file: &File) -> impl Iterator<Item = Key> + '_ {
    let tenant = file.tenant_id.as_str();
    std::iter::once((tenant.to_owned(), TENANT_TOTAL.to_owned())).chain(
        file.device_id
            .as_ref()
            .map(|d| (tenant.to_owned(), d.as_str().to_owned())),
    )
}

/// Where a file in `status` counts: `(bytes, files)` to add to used and to reserved.
fn contribution(file: &File, status: FileStatus) -> ((i64, i64), (i64, i64)) {
    let size = i64::try_from(file.size).unwrap_or(i64::MAX);
    match status {
        FileStatus::Uploaded => ((size, 1), (0, 0)),
        FileStatus::Pending | FileStatus::Verifying => ((0, 0), (size, 1)),
        FileStatus::Rejected | FileStatus::Expired | FileStatus::Deleted => ((0, 0), (0, 0)),
    }
}

fn add(
    conn: &mut DbConnection,
    key: &Key,
    used: (i64, i64),
    reserved: (i64, i64),
) -> QueryResult<()> {
    if used == (0, 0) && reserved == (0, 0) {
        return Ok(());
    }
    use usage_counters::dsl as u;
    diesel::update(u::usage_counters.find((&key.0, &key.1)))
        .set((
            u::bytes_used.eq(u::bytes_used + used.0),
            u::files_used.eq(u::files_used + used.1),
            u::bytes_reserved.eq(u::bytes_reserved + reserved.0),
            u::files_reserved.eq(u::files_reserved + reserved.1),
        ))
        .execute(conn)?;
    Ok(())
}

/// Moves `file`'s count from where `from` put it to where `to` puts it (inside the
/// transaction changing its status).
pub(super) fn on_transition(
    conn: &mut DbConnection,
    file: &File,
    from: FileStatus,
    to: FileStatus,
) -> QueryResult<()> {
    let (used_before, reserved_before) = contribution(file, from);
    let (used_after, reserved_after) = contribution(file, to);
    let used = (used_after.0 - used_before.0, used_after.1 - used_before.1);
    let reserved = (
        reserved_after.0 - reserved_before.0,
        reserved_after.1 - reserved_before.1,
    );
    for key in keys_of(file) {
        add(conn, &key, used, reserved)?;
    }
    Ok(())
}

/// Reserves room for new pending files, in order, inside the transaction inserting
/// them: each file gets `Ok` (counted) or the quota it would break (not counted;
/// the caller leaves it out).
pub(super) fn reserve(
    conn: &mut DbConnection,
    files: &[(&File, QuotaLimits)],
) -> QueryResult<Vec<Result<(), QuotaLimit>>> {
    use usage_counters::dsl as u;
    let keys: BTreeSet<Key> = files.iter().flat_map(|(f, _)| keys_of(f)).collect();
    // Rows are created on first use and locked in key order (no deadlocks between
    // instances locking overlapping sets).
    let mut counters: BTreeMap<Key, Usage> = BTreeMap::new();
    for key in &keys {
        let new_row = (u::tenant_id.eq(&key.0), u::device_id.eq(&key.1));
        let insert = diesel::insert_into(u::usage_counters)
            .values(new_row)
            .on_conflict_do_nothing();
        let query = u::usage_counters.find((&key.0, &key.1)).select((
            u::bytes_used,
            u::files_used,
            u::bytes_reserved,
            u::files_reserved,
        ));
        let usage: Usage = match conn {
            DbConnection::Postgresql(pg) => {
                insert.execute(pg)?;
                query.for_update().first(pg)?
            }
            DbConnection::Sqlite(sqlite) => {
                insert.execute(sqlite)?;
                query.first(sqlite)?
            }
        };
        counters.insert(key.clone(), usage);
    }
    let mut outcomes = Vec::with_capacity(files.len());
    for (file, limits) in files {
        let size = i64::try_from(file.size).unwrap_or(i64::MAX);
        let tenant_key = (file.tenant_id.as_str().to_owned(), TENANT_TOTAL.to_owned());
        let device_key = file
            .device_id
            .as_ref()
            .map(|d| (file.tenant_id.as_str().to_owned(), d.as_str().to_owned()));
        let over = |usage: Option<&Usage>, max_bytes: Option<u64>, max_files: Option<u64>| {
            let usage = usage.copied().unwrap_or_default();
            let bytes_over = max_bytes.is_some_and(|max| {
                usage.bytes().saturating_add(size) > i64::try_from(max).unwrap_or(i64::MAX)
            });
            let files_over = max_files.is_some_and(|max| {
                usage.files().saturating_add(1) > i64::try_from(max).unwrap_or(i64::MAX)
            });
            (bytes_over, files_over)
        };
        let refused = match over(
            counters.get(&tenant_key),
            limits.max_bytes,
            limits.max_files,
        ) {
            (true, _) => Some(QuotaLimit::MaxBytes),
            (_, true) => Some(QuotaLimit::MaxFiles),
            _ => match &device_key {
                Some(key) => {
                    match over(
                        counters.get(key),
                        limits.device_max_bytes,
                        limits.device_max_files,
                    ) {
                        (true, _) => Some(QuotaLimit::DeviceMaxBytes),
                        (_, true) => Some(QuotaLimit::DeviceMaxFiles),
                        _ => None,
                    }
                }
                None => None,
            },
        };
        if let Some(limit) = refused {
            outcomes.push(Err(limit));
            continue;
        }
        for key in std::iter::once(&tenant_key).chain(device_key.as_ref()) {
            let usage = counters.entry(key.clone()).or_default();
            usage.bytes_reserved += size;
            usage.files_reserved += 1;
        }
        outcomes.push(Ok(()));
    }
    // Written back as increments of what was reserved here (transitions may have
    // released some meanwhile on SQLite, where the rows are not locked).
    let mut reserved: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for ((file, _), outcome) in files.iter().zip(&outcomes) {
        if outcome.is_ok() {
            let size = i64::try_from(file.size).unwrap_or(i64::MAX);
            for key in keys_of(file) {
                let entry = reserved.entry(key).or_default();
                entry.0 += size;
                entry.1 += 1;
            }
        }
    }
    for (key, delta) in &reserved {
        add(conn, key, (0, 0), *delta)?;
    }
    Ok(outcomes)
}

impl Handler<GetUsage> for MetadataStore {
    type Result = Result<(Usage, Vec<(DeviceId, Usage)>), StoreError>;
    fn handle(&mut self, msg: GetUsage, _: &mut Self::Context) -> Self::Result {
        use usage_counters::dsl as u;
        let mut conn = self.conn()?;
        let columns = (
            u::bytes_used,
            u::files_used,
            u::bytes_reserved,
            u::files_reserved,
        );
        let tenant: Usage = u::usage_counters
            .find((msg.tenant.as_str(), TENANT_TOTAL))
            .select(columns)
            .first(&mut conn)
            .optional()?
            .unwrap_or_default();
        // Boxed queries are built per backend, so the query is written once here.
        macro_rules! devices_query {
            () => {{
                let mut devices = u::usage_counters
                    .filter(u::tenant_id.eq(msg.tenant.as_str()))
                    .filter(u::device_id.ne(TENANT_TOTAL))
                    .select((u::device_id, columns))
                    .order(u::device_id.asc())
                    .limit(msg.limit)
                    .into_boxed();
                if let Some(device) = &msg.device {
                    devices = devices.filter(u::device_id.eq(device.as_str()));
                }
                if let Some(after) = &msg.after {
                    devices = devices.filter(u::device_id.gt(after.as_str()));
                }
                devices
            }};
        }
        let rows: Vec<(String, Usage)> = match &mut *conn {
            DbConnection::Postgresql(pg) => devices_query!().load(pg)?,
            DbConnection::Sqlite(sqlite) => devices_query!().load(sqlite)?,
        };
        let devices = rows
            .into_iter()
            .filter_map(|(id, usage)| DeviceId::parse(&id).ok().map(|id| (id, usage)))
            .collect();
        Ok((tenant, devices))
    }
}
