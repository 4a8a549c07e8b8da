//! Usage counters per tenant and per device root: what is stored (`used`: uploaded
//! files) and promised (`reserved`: pending or verifying files). They change in the
//! same transaction as the file records they count, so they are exact. A counter is
//! kept in shards, one per metadata writer, summed when read: writers committing new
//! files of one tenant add to different rows and never wait for each other. A quota
//! check locks the counter's first shard (`FOR UPDATE` on PostgreSQL) before summing,
//! so instances racing for the last bytes of a quota never over-commit it.

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

    /// Two shards of one counter, summed.
    fn plus(self, other: &Usage) -> Usage {
        Usage {
            bytes_used: self.bytes_used + other.bytes_used,
            files_used: self.files_used + other.files_used,
            bytes_reserved: self.bytes_reserved + other.bytes_reserved,
            files_reserved: self.files_reserved + other.files_reserved,
        }
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

/// Adds to one shard of a counter, creating it on first use.
fn add(
    conn: &mut DbConnection,
    key: &Key,
    shard: i16,
    used: (i64, i64),
    reserved: (i64, i64),
) -> QueryResult<()> {
    use diesel::upsert::excluded;
    use usage_counters::dsl as u;
    if used == (0, 0) && reserved == (0, 0) {
        return Ok(());
    }
    let upsert = diesel::insert_into(u::usage_counters)
        .values((
            u::tenant_id.eq(&key.0),
            u::device_id.eq(&key.1),
            u::shard.eq(shard),
            u::bytes_used.eq(used.0),
            u::files_used.eq(used.1),
            u::bytes_reserved.eq(reserved.0),
            u::files_reserved.eq(reserved.1),
        ))
        .on_conflict((u::tenant_id, u::device_id, u::shard))
        .do_update()
        .set((
            u::bytes_used.eq(u::bytes_used + excluded(u::bytes_used)),
            u::files_used.eq(u::files_used + excluded(u::files_used)),
            u::bytes_reserved.eq(u::bytes_reserved + excluded(u::bytes_reserved)),
            u::files_reserved.eq(u::files_reserved + excluded(u::files_reserved)),
        ));
    match conn {
        DbConnection::Postgresql(pg) => upsert.execute(pg)?,
        DbConnection::Sqlite(sqlite) => upsert.execute(sqlite)?,
    };
    Ok(())
}

/// The shard status changes are counted in (the writers' new files go to theirs).
const TRANSITION_SHARD: i16 = 0;

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
        add(conn, &key, TRANSITION_SHARD, used, reserved)?;
    }
    Ok(())
}

/// What a group of new files may take: per file `Ok` (counted) or the quota it
/// would break (not counted; the caller leaves it out).
pub(super) struct Reservation {
    /// One outcome per file, in order.
    pub outcomes: Vec<Result<(), QuotaLimit>>,
    /// What the admitted files add to each counter: `(bytes, files)`.
    deltas: BTreeMap<Key, (i64, i64)>,
}

impl Reservation {
    /// Adds the admitted files to the counters, in `shard`. Called last in the
    /// transaction, so a counter row is held only while the transaction commits.
    pub fn record(&self, conn: &mut DbConnection, shard: i16) -> QueryResult<()> {
        for (key, delta) in &self.deltas {
            add(conn, key, shard, (0, 0), *delta)?;
        }
        Ok(())
    }
}

/// Decides which new pending files fit their quotas, inside the transaction
/// inserting them. Files without quotas are admitted without reading anything;
/// a quota check locks the counters' first shard (a mutex every quota check of
/// that counter takes), then reads the sum of all shards.
pub(super) fn reserve(
    conn: &mut DbConnection,
    files: &[(&File, QuotaLimits)],
) -> QueryResult<Reservation> {
    let mut counters: BTreeMap<Key, Usage> = BTreeMap::new();
    let checked: BTreeSet<Key> = files
        .iter()
        .filter(|(_, limits)| *limits != QuotaLimits::default())
        .flat_map(|(f, _)| keys_of(f))
        .collect();
    // Locked in key order: no deadlocks between instances locking overlapping sets.
    for key in &checked {
        counters.insert(key.clone(), locked_usage(conn, key)?);
    }
    let mut outcomes = Vec::with_capacity(files.len());
    let mut deltas: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for (file, limits) in files {
        let size = i64::try_from(file.size).unwrap_or(i64::MAX);
        let refused = if *limits == QuotaLimits::default() {
            None
        } else {
            over_quota(file, size, limits, &counters)
        };
        if let Some(limit) = refused {
            outcomes.push(Err(limit));
            continue;
        }
        for key in keys_of(file) {
            if let Some(usage) = counters.get_mut(&key) {
                usage.bytes_reserved += size;
                usage.files_reserved += 1;
            }
            let delta = deltas.entry(key).or_default();
            delta.0 += size;
            delta.1 += 1;
        }
        outcomes.push(Ok(()));
    }
    Ok(Reservation { outcomes, deltas })
}

/// The quota `file` would break given `counters` (which hold its keys).
fn over_quota(
    file: &File,
    size: i64,
    limits: &QuotaLimits,
    counters: &BTreeMap<Key, Usage>,
) -> Option<QuotaLimit> {
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
    let tenant_key = (file.tenant_id.as_str().to_owned(), TENANT_TOTAL.to_owned());
    match over(
        counters.get(&tenant_key),
        limits.max_bytes,
        limits.max_files,
    ) {
        (true, _) => return Some(QuotaLimit::MaxBytes),
        (_, true) => return Some(QuotaLimit::MaxFiles),
        _ => {}
    }
    let device_key = (
        file.tenant_id.as_str().to_owned(),
        file.device_id.as_ref()?.as_str().to_owned(),
    );
    match over(
        counters.get(&device_key),
        limits.device_max_bytes,
        limits.device_max_files,
    ) {
        (true, _) => Some(QuotaLimit::DeviceMaxBytes),
        (_, true) => Some(QuotaLimit::DeviceMaxFiles),
        _ => None,
    }
}

/// Locks `key`'s first shard (created on first use), then sums all its shards: the
/// sum is read after the lock is held, so it includes every reservation committed
/// by the quota check that held the lock before.
fn locked_usage(conn: &mut DbConnection, key: &Key) -> QueryResult<Usage> {
    use usage_counters::dsl as u;
    let first_shard = (
        u::tenant_id.eq(&key.0),
        u::device_id.eq(&key.1),
        u::shard.eq(TRANSITION_SHARD),
    );
    let insert = diesel::insert_into(u::usage_counters)
        .values(first_shard)
        .on_conflict_do_nothing();
    let lock = u::usage_counters
        .find((&key.0, &key.1, TRANSITION_SHARD))
        .select(u::shard);
    let shards = u::usage_counters
        .filter(u::tenant_id.eq(&key.0))
        .filter(u::device_id.eq(&key.1))
        .select(COUNTER_COLUMNS);
    let rows: Vec<Usage> = match conn {
        DbConnection::Postgresql(pg) => {
            insert.execute(pg)?;
            lock.for_update().first::<i16>(pg)?;
            shards.load(pg)?
        }
        // SQLite has one writer at a time: the transaction is the lock.
        DbConnection::Sqlite(sqlite) => {
            insert.execute(sqlite)?;
            shards.load(sqlite)?
        }
    };
    Ok(rows.iter().fold(Usage::default(), Usage::plus))
}

/// A counter's columns, in `Usage` order.
const COUNTER_COLUMNS: (
    usage_counters::bytes_used,
    usage_counters::files_used,
    usage_counters::bytes_reserved,
    usage_counters::files_reserved,
) = (
    usage_counters::bytes_used,
    usage_counters::files_used,
    usage_counters::bytes_reserved,
    usage_counters::files_reserved,
);

impl Handler<GetUsage> for MetadataStore {
    type Result = Result<(Usage, Vec<(DeviceId, Usage)>), StoreError>;
    fn handle(&mut self, msg: GetUsage, _: &mut Self::Context) -> Self::Result {
        use usage_counters::dsl as u;
        let mut conn = self.conn()?;
        let tenant_shards: Vec<Usage> = u::usage_counters
            .filter(u::tenant_id.eq(msg.tenant.as_str()))
            .filter(u::device_id.eq(TENANT_TOTAL))
            .select(COUNTER_COLUMNS)
            .load(&mut *conn)?;
        let tenant = tenant_shards.iter().fold(Usage::default(), Usage::plus);
        // The page is chosen by device id, then each device's shards are summed.
        // Boxed queries are built per backend, so the query is written once here.
        macro_rules! page_query {
            () => {{
                let mut devices = u::usage_counters
                    .filter(u::tenant_id.eq(msg.tenant.as_str()))
                    .filter(u::device_id.ne(TENANT_TOTAL))
                    .select(u::device_id)
                    .distinct()
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
        let page: Vec<String> = match &mut *conn {
            DbConnection::Postgresql(pg) => page_query!().load(pg)?,
            DbConnection::Sqlite(sqlite) => page_query!().load(sqlite)?,
        };
        let shards: Vec<(String, Usage)> = u::usage_counters
            .filter(u::tenant_id.eq(msg.tenant.as_str()))
            .filter(u::device_id.eq_any(&page))
            .select((u::device_id, COUNTER_COLUMNS))
            .load(&mut *conn)?;
        let mut sums: BTreeMap<String, Usage> = BTreeMap::new();
        for (device, usage) in &shards {
            let sum = sums.entry(device.clone()).or_default();
            *sum = sum.plus(usage);
        }
        let devices = sums
            .into_iter()
            .filter_map(|(id, usage)| DeviceId::parse(&id).ok().map(|id| (id, usage)))
            .collect();
        Ok((tenant, devices))
    }
}
