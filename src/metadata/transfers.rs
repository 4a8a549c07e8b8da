//! Inboxes and transfers: each change of a transfer records one outbox event per
//! recipient in the same transaction. Every write to a transfer first updates its
//! `transfers` row (guarded by state), so concurrent writers take the same lock in
//! the same order and exactly one of them changes it.

use std::collections::HashMap;

use actix::{Handler, Message};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::db::DbConnection;
use super::rows::utc;
use super::schema::{files, inboxes, transfer_recipients, transfers};
use super::{append_outbox, now_micros, MetadataStore, OutboxOrder, StoreError};
use crate::domain::{
    AcceptFrom, DeviceId, FileId, FileStatus, Recipient, ServiceName, Sha256, TenantId, Transfer,
    TransferId, TransferState, TransferredFile,
};
use crate::events::{transfer_event, EventContext, TransferEventKind};
use crate::telemetry::metrics;

/// States in which a transfer can still be downloaded, accepted or revoked.
const LIVE: [&str; 2] = [
    TransferState::Offered.as_str(),
    TransferState::Received.as_str(),
];

/// A device's allow list (the default, nobody, when it never set one).
#[derive(Message)]
#[rtype(result = "Result<AcceptFrom, StoreError>")]
pub struct GetInbox {
    /// Tenant of the device.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
}

/// Replaces a device's allow list.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SetInbox {
    /// Tenant of the device.
    pub tenant: TenantId,
    /// The device.
    pub device: DeviceId,
    /// Whom it accepts files from.
    pub accept_from: AcceptFrom,
}

/// Records a new transfer, if the file is still uploaded and every recipient
/// accepts files from the sender (checked in the same transaction).
#[derive(Message)]
#[rtype(result = "Result<Offer, StoreError>")]
pub struct CreateTransfer(pub Transfer);

/// What [`CreateTransfer`] did.
#[derive(Debug, Clone)]
pub enum Offer {
    /// Recorded, with its `offered` events.
    Created(Box<Transfer>),
    /// These recipients do not accept files from the sender; nothing was recorded.
    Refused(Vec<DeviceId>),
    /// The file is no longer `uploaded` (or gone); nothing was recorded.
    NotUploaded,
}

/// Look a transfer up by id.
#[derive(Message)]
#[rtype(result = "Result<Option<Transfer>, StoreError>")]
pub struct GetTransfer(pub TransferId);

/// One page of a tenant's transfers, newest first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Transfer>, StoreError>")]
pub struct ListTransfers {
    /// Tenant whose transfers are listed.
    pub tenant: TenantId,
    /// Which ones.
    pub side: TransferSide,
    /// Only transfers with this recipient state: the recipient's own for
    /// [`TransferSide::To`], any recipient's otherwise.
    pub state: Option<TransferState>,
    /// Only transfers with ids below this one (the keyset cursor).
    pub before: Option<TransferId>,
    /// Page size.
    pub limit: i64,
}

/// Which of a tenant's transfers a listing covers.
#[derive(Debug, Clone)]
pub enum TransferSide {
    /// Those offered to this device.
    To(DeviceId),
    /// Those this device sent.
    From(DeviceId),
    /// All of them.
    All,
}

/// `offered` → `received` for one recipient, while the transfer is live at `now`.
#[derive(Message)]
#[rtype(result = "Result<TransferChange, StoreError>")]
pub struct AcceptTransfer {
    /// The transfer.
    pub id: TransferId,
    /// The accepting recipient.
    pub recipient: DeviceId,
    /// The time the transfer must not have expired by.
    pub now: DateTime<Utc>,
}

/// A live transfer → `revoked`.
#[derive(Message)]
#[rtype(result = "Result<TransferChange, StoreError>")]
pub struct RevokeTransfer(pub TransferId);

/// Live transfers past their `expires_at` → `expired` (the reconciler's path), up
/// to `limit` at once; returns those that changed.
#[derive(Message)]
#[rtype(result = "Result<Vec<Transfer>, StoreError>")]
pub struct ExpireTransfers {
    /// Transfers that expired before this.
    pub now: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

/// Result of a guarded change of a transfer.
#[derive(Debug, Clone)]
pub enum TransferChange {
    /// This call changed it (and recorded the events).
    Changed(Transfer),
    /// It already was in the target state; nothing was recorded.
    Unchanged(Transfer),
    /// It is in a state the change does not start from (ended, or expired).
    Conflict(Transfer),
    /// No such transfer.
    NotFound,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = transfers)]
struct TransferRow {
    id: String,
    tenant_id: String,
    file_id: String,
    sender_device: Option<String>,
    sender_service: Option<String>,
    state: String,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = transfer_recipients)]
struct RecipientRow {
    transfer_id: String,
    tenant_id: String,
    device_id: String,
    state: String,
    updated_at: NaiveDateTime,
}

/// The columns of the file a transfer shows.
type FileColumns = (String, i64, String, String);

fn corrupt(id: &str, what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt transfer row {id}: {what}"))
}

fn decode(
    row: TransferRow,
    file: FileColumns,
    recipients: Vec<RecipientRow>,
) -> Result<Transfer, StoreError> {
    let id = row.id.clone();
    let bad = |what: &str| corrupt(&id, what);
    let (name, size, sha256, content_type) = file;
    Ok(Transfer {
        id: row.id.parse().map_err(|_| bad("id"))?,
        tenant_id: TenantId::parse(&row.tenant_id).map_err(|_| bad("tenant_id"))?,
        file_id: row.file_id.parse::<FileId>().map_err(|_| bad("file_id"))?,
        from: row
            .sender_device
            .as_deref()
            .map(DeviceId::parse)
            .transpose()
            .map_err(|_| bad("sender_device"))?,
        from_service: row
            .sender_service
            .as_deref()
            .map(ServiceName::parse)
            .transpose()
            .map_err(|_| bad("sender_service"))?,
        recipients: recipients
            .into_iter()
            .map(|r| {
                Ok(Recipient {
                    device_id: DeviceId::parse(&r.device_id).map_err(|_| bad("recipient"))?,
                    state: r.state.parse().map_err(|_| bad("recipient state"))?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        state: row.state.parse().map_err(|_| bad("state"))?,
        created_at: utc(row.created_at),
        expires_at: utc(row.expires_at),
        file: TransferredFile {
            name,
            size: u64::try_from(size).map_err(|_| bad("file size"))?,
            sha256: Sha256::parse_hex(&sha256).map_err(|_| bad("file sha256"))?,
            content_type,
        },
    })
}

/// Reads transfers by id, with their recipients and file, in the order of `ids`.
fn load_many(conn: &mut DbConnection, ids: &[String]) -> Result<Vec<Transfer>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(TransferRow, FileColumns)> = transfers::table
        .inner_join(files::table)
        .filter(transfers::id.eq_any(ids))
        .select((
            TransferRow::as_select(),
            (files::name, files::size, files::sha256, files::content_type),
        ))
        .load(conn)?;
    let mut recipients: HashMap<String, Vec<RecipientRow>> = HashMap::new();
    let recipient_rows: Vec<RecipientRow> = transfer_recipients::table
        .filter(transfer_recipients::transfer_id.eq_any(ids))
        .order((
            transfer_recipients::transfer_id.asc(),
            transfer_recipients::device_id.asc(),
        ))
        .select(RecipientRow::as_select())
        .load(conn)?;
    for row in recipient_rows {
        recipients
            .entry(row.transfer_id.clone())
            .or_default()
            .push(row);
    }
    let mut by_id: HashMap<String, Transfer> = HashMap::new();
    for (row, file) in rows {
        let id = row.id.clone();
        let mine = recipients.remove(&id).unwrap_or_default();
        by_id.insert(id, decode(row, file, mine)?);
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

fn load(conn: &mut DbConnection, id: &str) -> Result<Option<Transfer>, StoreError> {
    Ok(load_many(conn, &[id.to_owned()])?.pop())
}

fn load_existing(conn: &mut DbConnection, id: &str) -> Result<Transfer, StoreError> {
    load(conn, id)?
        .ok_or_else(|| StoreError::Internal(format!("transfer {id} vanished inside a transaction")))
}

/// Appends the event `kind` of `transfer` for each of `recipients`.
fn record_events<'a>(
    conn: &mut DbConnection,
    context: &EventContext,
    kind: TransferEventKind,
    transfer: &Transfer,
    recipients: impl IntoIterator<Item = &'a DeviceId>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for recipient in recipients {
        let event = transfer_event(kind, transfer, recipient, context, at)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        // The file id keys the relay's ordering: a transfer's events follow its
        // file's, and each other, in the order they were recorded.
        append_outbox(
            conn,
            &event,
            OutboxOrder::key(transfer.file_id),
            &transfer.tenant_id,
            Some(recipient),
            at,
        )?;
    }
    Ok(())
}

/// Ends a live transfer (`revoked` or `expired`): its own state, every recipient
/// that had not accepted, one event per recipient. `None` when it was not live.
fn end(
    conn: &mut DbConnection,
    context: &EventContext,
    id: &str,
    to: TransferState,
    now: DateTime<Utc>,
) -> Result<Option<Transfer>, StoreError> {
    let changed = diesel::update(
        transfers::table
            .filter(transfers::id.eq(id))
            .filter(transfers::state.eq_any(LIVE)),
    )
    .set((
        transfers::state.eq(to.as_str()),
        transfers::updated_at.eq(now.naive_utc()),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Ok(None);
    }
    diesel::update(
        transfer_recipients::table
            .filter(transfer_recipients::transfer_id.eq(id))
            .filter(transfer_recipients::state.eq(TransferState::Offered.as_str())),
    )
    .set((
        transfer_recipients::state.eq(to.as_str()),
        transfer_recipients::updated_at.eq(now.naive_utc()),
    ))
    .execute(conn)?;
    let transfer = load_existing(conn, id)?;
    let kind = if to == TransferState::Expired {
        TransferEventKind::Expired
    } else {
        TransferEventKind::Revoked
    };
    let recipients: Vec<DeviceId> = transfer
        .recipients
        .iter()
        .map(|r| r.device_id.clone())
        .collect();
    record_events(conn, context, kind, &transfer, &recipients, now)?;
    Ok(Some(transfer))
}

/// Revokes every live transfer of a file, inside the transaction deleting it.
pub(super) fn revoke_for_file(
    conn: &mut DbConnection,
    context: &EventContext,
    file_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Transfer>, StoreError> {
    let live: Vec<String> = transfers::table
        .filter(transfers::file_id.eq(file_id))
        .filter(transfers::state.eq_any(LIVE))
        .order(transfers::id.asc())
        .select(transfers::id)
        .load(conn)?;
    let mut revoked = Vec::new();
    for id in live {
        revoked.extend(end(conn, context, &id, TransferState::Revoked, now)?);
    }
    Ok(revoked)
}

/// Counts transfers that reached their state (after their transaction committed).
pub(super) fn count_reached(transfers: &[Transfer], state: TransferState) {
    for transfer in transfers {
        metrics::record_transfer(state.as_str(), transfer.tenant_id.as_str());
    }
}

fn read_inbox(
    conn: &mut DbConnection,
    tenant: &str,
    device: &str,
) -> Result<AcceptFrom, StoreError> {
    let stored: Option<String> = inboxes::table
        .filter(inboxes::tenant_id.eq(tenant))
        .filter(inboxes::device_id.eq(device))
        .select(inboxes::accept_from)
        .first(conn)
        .optional()?;
    match stored {
        None => Ok(AcceptFrom::default()),
        Some(text) => serde_json::from_str(&text).map_err(|_| {
            StoreError::Internal(format!("corrupt inbox row {tenant}/{device}: accept_from"))
        }),
    }
}

impl Handler<GetInbox> for MetadataStore {
    type Result = Result<AcceptFrom, StoreError>;
    fn handle(&mut self, msg: GetInbox, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        read_inbox(&mut conn, msg.tenant.as_str(), msg.device.as_str())
    }
}

impl Handler<SetInbox> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: SetInbox, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let text = serde_json::to_string(&msg.accept_from)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let now = now_micros().naive_utc();
        // No portable upsert on the multi-connection: update, else insert. Two
        // first writes racing on Postgres: the loser's insert fails on the key and
        // the client retries.
        conn.transaction(|conn| {
            let updated = diesel::update(
                inboxes::table
                    .filter(inboxes::tenant_id.eq(msg.tenant.as_str()))
                    .filter(inboxes::device_id.eq(msg.device.as_str())),
            )
            .set((inboxes::accept_from.eq(&text), inboxes::updated_at.eq(now)))
            .execute(conn)?;
            if updated == 0 {
                diesel::insert_into(inboxes::table)
                    .values((
                        inboxes::tenant_id.eq(msg.tenant.as_str()),
                        inboxes::device_id.eq(msg.device.as_str()),
                        inboxes::accept_from.eq(&text),
                        inboxes::updated_at.eq(now),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })
    }
}

impl Handler<CreateTransfer> for MetadataStore {
    type Result = Result<Offer, StoreError>;
    fn handle(&mut self, msg: CreateTransfer, _: &mut Self::Context) -> Self::Result {
        let transfer = msg.0;
        let mut conn = self.conn()?;
        let tenant = transfer.tenant_id.as_str().to_owned();
        let file_id = transfer.file_id.to_string();
        let offer = conn.transaction::<_, StoreError, _>(|conn| {
            // Locks the file row while it is uploaded: a delete running at the same
            // time either sees this transfer (and revokes it) or ends first.
            let locked = diesel::update(
                files::table
                    .filter(files::id.eq(&file_id))
                    .filter(files::tenant_id.eq(&tenant))
                    .filter(files::status.eq(FileStatus::Uploaded.as_str())),
            )
            .set(files::updated_at.eq(files::updated_at))
            .execute(conn)?;
            if locked == 0 {
                return Ok(Offer::NotUploaded);
            }
            if let Some(sender) = &transfer.from {
                let mut refused = Vec::new();
                for recipient in &transfer.recipients {
                    let inbox = read_inbox(conn, &tenant, recipient.device_id.as_str())?;
                    if !inbox.accepts(sender) {
                        refused.push(recipient.device_id.clone());
                    }
                }
                if !refused.is_empty() {
                    return Ok(Offer::Refused(refused));
                }
            }
            let id = transfer.id.to_string();
            let created = transfer.created_at.naive_utc();
            diesel::insert_into(transfers::table)
                .values(TransferRow {
                    id: id.clone(),
                    tenant_id: tenant.clone(),
                    file_id: file_id.clone(),
                    sender_device: transfer.from.as_ref().map(|d| d.to_string()),
                    sender_service: transfer.from_service.as_ref().map(|s| s.to_string()),
                    state: TransferState::Offered.as_str().into(),
                    created_at: created,
                    expires_at: transfer.expires_at.naive_utc(),
                    updated_at: created,
                })
                .execute(conn)?;
            // One statement per row: the multi-connection cannot insert a slice.
            for recipient in &transfer.recipients {
                diesel::insert_into(transfer_recipients::table)
                    .values(RecipientRow {
                        transfer_id: id.clone(),
                        tenant_id: tenant.clone(),
                        device_id: recipient.device_id.to_string(),
                        state: TransferState::Offered.as_str().into(),
                        updated_at: created,
                    })
                    .execute(conn)?;
            }
            let stored = load_existing(conn, &id)?;
            let recipients: Vec<DeviceId> = stored
                .recipients
                .iter()
                .map(|r| r.device_id.clone())
                .collect();
            record_events(
                conn,
                &self.events,
                TransferEventKind::Offered,
                &stored,
                &recipients,
                transfer.created_at,
            )?;
            Ok(Offer::Created(Box::new(stored)))
        })?;
        if let Offer::Created(created) = &offer {
            count_reached(std::slice::from_ref(created), TransferState::Offered);
        }
        Ok(offer)
    }
}

impl Handler<GetTransfer> for MetadataStore {
    type Result = Result<Option<Transfer>, StoreError>;
    fn handle(&mut self, msg: GetTransfer, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        load(&mut conn, &msg.0.to_string())
    }
}

impl Handler<ListTransfers> for MetadataStore {
    type Result = Result<Vec<Transfer>, StoreError>;
    fn handle(&mut self, msg: ListTransfers, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let before = msg.before.map(|id| id.to_string());
        let ids: Vec<String> = match &msg.side {
            TransferSide::To(device) => {
                let mut query = transfer_recipients::table
                    .filter(transfer_recipients::tenant_id.eq(msg.tenant.as_str()))
                    .filter(transfer_recipients::device_id.eq(device.as_str()))
                    .select(transfer_recipients::transfer_id)
                    .order(transfer_recipients::transfer_id.desc())
                    .limit(msg.limit)
                    .into_boxed();
                if let Some(state) = msg.state {
                    query = query.filter(transfer_recipients::state.eq(state.as_str()));
                }
                if let Some(before) = &before {
                    query = query.filter(transfer_recipients::transfer_id.lt(before));
                }
                query.load(&mut *conn)?
            }
            TransferSide::From(_) | TransferSide::All => {
                let mut query = transfers::table
                    .filter(transfers::tenant_id.eq(msg.tenant.as_str()))
                    .select(transfers::id)
                    .order(transfers::id.desc())
                    .limit(msg.limit)
                    .into_boxed();
                if let TransferSide::From(device) = &msg.side {
                    query = query.filter(transfers::sender_device.eq(device.as_str()));
                }
                if let Some(state) = msg.state {
                    query = query.filter(
                        transfers::id.eq_any(
                            transfer_recipients::table
                                .filter(transfer_recipients::tenant_id.eq(msg.tenant.as_str()))
                                .filter(transfer_recipients::state.eq(state.as_str()))
                                .select(transfer_recipients::transfer_id),
                        ),
                    );
                }
                if let Some(before) = &before {
                    query = query.filter(transfers::id.lt(before));
                }
                query.load(&mut *conn)?
            }
        };
        load_many(&mut conn, &ids)
    }
}

impl Handler<AcceptTransfer> for MetadataStore {
    type Result = Result<TransferChange, StoreError>;
    fn handle(&mut self, msg: AcceptTransfer, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let id = msg.id.to_string();
        let now = now_micros();
        let change = conn.transaction::<_, StoreError, _>(|conn| {
            // The transfer row first (see the module's note on lock order).
            let live = diesel::update(
                transfers::table
                    .filter(transfers::id.eq(&id))
                    .filter(transfers::state.eq_any(LIVE))
                    .filter(transfers::expires_at.gt(msg.now.naive_utc())),
            )
            .set(transfers::updated_at.eq(now.naive_utc()))
            .execute(conn)?;
            if live == 0 {
                return Ok(match load(conn, &id)? {
                    None => TransferChange::NotFound,
                    Some(t) => TransferChange::Conflict(t),
                });
            }
            let accepted = diesel::update(
                transfer_recipients::table
                    .filter(transfer_recipients::transfer_id.eq(&id))
                    .filter(transfer_recipients::device_id.eq(msg.recipient.as_str()))
                    .filter(transfer_recipients::state.eq(TransferState::Offered.as_str())),
            )
            .set((
                transfer_recipients::state.eq(TransferState::Received.as_str()),
                transfer_recipients::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
            if accepted == 0 {
                return Ok(TransferChange::Unchanged(load_existing(conn, &id)?));
            }
            let waiting: i64 = transfer_recipients::table
                .filter(transfer_recipients::transfer_id.eq(&id))
                .filter(transfer_recipients::state.ne(TransferState::Received.as_str()))
                .count()
                .get_result(conn)?;
            if waiting == 0 {
                diesel::update(transfers::table.filter(transfers::id.eq(&id)))
                    .set(transfers::state.eq(TransferState::Received.as_str()))
                    .execute(conn)?;
            }
            let transfer = load_existing(conn, &id)?;
            record_events(
                conn,
                &self.events,
                TransferEventKind::Received,
                &transfer,
                [&msg.recipient],
                now,
            )?;
            Ok(TransferChange::Changed(transfer))
        })?;
        if let TransferChange::Changed(t) = &change {
            count_reached(std::slice::from_ref(t), TransferState::Received);
        }
        Ok(change)
    }
}

impl Handler<RevokeTransfer> for MetadataStore {
    type Result = Result<TransferChange, StoreError>;
    fn handle(&mut self, msg: RevokeTransfer, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let id = msg.0.to_string();
        let change = conn.transaction::<_, StoreError, _>(|conn| {
            let now = now_micros();
            if let Some(transfer) = end(conn, &self.events, &id, TransferState::Revoked, now)? {
                return Ok(TransferChange::Changed(transfer));
            }
            Ok(match load(conn, &id)? {
                None => TransferChange::NotFound,
                Some(t) if t.state == TransferState::Revoked => TransferChange::Unchanged(t),
                Some(t) => TransferChange::Conflict(t),
            })
        })?;
        if let TransferChange::Changed(t) = &change {
            count_reached(std::slice::from_ref(t), TransferState::Revoked);
        }
        Ok(change)
    }
}

impl Handler<ExpireTransfers> for MetadataStore {
    type Result = Result<Vec<Transfer>, StoreError>;
    fn handle(&mut self, msg: ExpireTransfers, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let expired = conn.transaction::<_, StoreError, _>(|conn| {
            let due: Vec<String> = transfers::table
                .filter(transfers::state.eq_any(LIVE))
                .filter(transfers::expires_at.le(msg.now.naive_utc()))
                .order(transfers::expires_at.asc())
                .limit(msg.limit)
                .select(transfers::id)
                .load(conn)?;
            let now = now_micros();
            let mut expired = Vec::new();
            for id in due {
                // Another instance may have ended it meanwhile: the guard skips it.
                expired.extend(end(conn, &self.events, &id, TransferState::Expired, now)?);
            }
            Ok(expired)
        })?;
        count_reached(&expired, TransferState::Expired);
        Ok(expired)
    }
}
