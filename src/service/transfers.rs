//! Transfers between devices: inbox allow lists, offering an uploaded file to
//! devices of the tenant, and what recipients, senders and services may do with
//! a transfer. A recipient reaches the file only through the transfer; a caller
//! who is no party to a transfer (another device, another tenant) never learns it
//! exists.

use super::*;
use crate::domain::{
    AcceptFrom, Inbox, Recipient, Transfer, TransferCursor, TransferId, TransferState,
    TransferredFile, DEFAULT_TRANSFER_TTL_SECS, MAX_RECIPIENTS, MAX_TRANSFER_TTL_SECS,
};
use crate::metadata::{
    AcceptTransfer, CreateTransfer, ExpireTransfers, GetInbox, GetTransfer, ListTransfers, Offer,
    RevokeTransfer, SetInbox, TransferChange, TransferSide,
};

/// Body of `PUT /v1/devices/{device}/inbox`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxRequest {
    /// `"*"` (any device of the tenant), a list of device ids, or `[]` (nobody).
    pub accept_from: AcceptFrom,
}

/// Body of `POST /v1/transfers`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The uploaded file to offer.
    #[schema(value_type = String, format = Uuid)]
    pub file_id: FileId,
    /// The receiving devices of the tenant (1 to 100, distinct from the sender).
    #[schema(min_items = 1, max_items = 100)]
    pub to: Vec<DeviceId>,
    /// Lifetime in seconds, 1 to 2592000 (30 days); default 604800 (7 days).
    #[schema(minimum = 1, maximum = 2592000)]
    pub expires_in_secs: Option<u64>,
}

/// Which side of its transfers a device lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Transfers offered to the caller.
    In,
    /// Transfers the caller sent.
    Out,
}

/// Filters of `GET /v1/transfers`, parsed from the query string.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TransferListRequest {
    /// `in` (default for devices): offered to the caller; `out`: sent by the
    /// caller. Services list every transfer of the tenant and may give only `out`.
    pub direction: Option<Direction>,
    /// Only transfers with this recipient state: the caller's own for `in`, any
    /// recipient's for `out`.
    pub state: Option<TransferState>,
    /// Page size, 1–1000 (default 100).
    #[param(schema_with = super::query::page_size_schema)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, as returned (any other text: 400).
    pub cursor: Option<String>,
}

/// One page of transfers.
#[derive(Debug, Clone)]
pub struct TransferPage {
    /// Transfers, newest first.
    pub transfers: Vec<Transfer>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

fn transfer_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such transfer")
}

impl FileService {
    /// Authorizes `operation` on `device`'s inbox: the device itself or a service
    /// of its tenant; to another device it does not exist.
    pub fn authorize_inbox(
        &self,
        who: &Authenticated,
        device: &DeviceId,
        operation: Operation,
    ) -> Result<(), ApiError> {
        let identity = &who.identity;
        let root = Root::Device(device.clone());
        let decision = identity.may(operation, &identity.tenant, &root);
        let result = self.authorize(
            who,
            operation,
            &root.resource(&identity.tenant),
            decision,
            None,
            || ApiError::new(ErrorCode::NotFound, "no such device inbox"),
        );
        self.settle(who, result)
    }

    /// A device's inbox settings (the caller was authorized by [`Self::authorize_inbox`]).
    pub async fn inbox(&self, who: &Authenticated, device: DeviceId) -> Result<Inbox, ApiError> {
        let result = self
            .ask(GetInbox {
                tenant: who.identity.tenant.clone(),
                device: device.clone(),
            })
            .await
            .map(|accept_from| Inbox {
                device_id: device,
                accept_from,
            });
        self.settle(who, result)
    }

    /// Replaces a device's allow list (the caller was authorized by
    /// [`Self::authorize_inbox`]).
    pub async fn set_inbox(
        &self,
        who: &Authenticated,
        device: DeviceId,
        request: InboxRequest,
    ) -> Result<Inbox, ApiError> {
        let result = self
            .ask(SetInbox {
                tenant: who.identity.tenant.clone(),
                device: device.clone(),
                accept_from: request.accept_from.clone(),
            })
            .await
            .map(|()| Inbox {
                device_id: device,
                accept_from: request.accept_from,
            });
        self.settle(who, result)
    }

    /// The file `id`, if the caller may send it: its owner device or a service of
    /// its tenant. Others' files are "not found"; a device may see but not send
    /// the shared root's files.
    pub async fn sendable_file(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let result = self.owned_file(who, id).await;
        self.settle(who, result)
    }

    async fn owned_file(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let file = self.visible_file(who, id, Operation::Read).await?;
        if let Principal::Device(me) = &who.identity.principal {
            if file.device_id.as_ref() != Some(me) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only the file's owner device or a service may send it",
                ));
            }
        }
        Ok(file)
    }

    /// Offers `file` (as [`Self::sendable_file`] returned it for the caller and
    /// `request.file_id`) to devices of the tenant: every recipient must accept
    /// files from the sending device (services may always send), or nothing is
    /// created.
    pub async fn send(
        &self,
        who: &Authenticated,
        file: File,
        request: SendRequest,
    ) -> Result<Transfer, ApiError> {
        let result = self.offer(who, file, request).await;
        self.settle(who, result)
    }

    async fn offer(
        &self,
        who: &Authenticated,
        file: File,
        request: SendRequest,
    ) -> Result<Transfer, ApiError> {
        if file.id != request.file_id {
            return Err(ApiError::internal(
                "a transfer was asked for with another file than the one authorized",
            ));
        }
        let (from, from_service) = match &who.identity.principal {
            Principal::Device(d) => (Some(d.clone()), None),
            Principal::Service(s) => (None, Some(s.clone())),
        };
        let mut to = request.to;
        to.sort();
        to.dedup();
        if to.is_empty() || to.len() > MAX_RECIPIENTS {
            return Err(ApiError::invalid(format!(
                "to must name 1 to {MAX_RECIPIENTS} devices"
            )));
        }
        if let Some(me) = &from {
            if to.contains(me) {
                return Err(ApiError::invalid("a device cannot send a file to itself"));
            }
        }
        let ttl = request.expires_in_secs.unwrap_or(DEFAULT_TRANSFER_TTL_SECS);
        if !(1..=MAX_TRANSFER_TTL_SECS).contains(&ttl) {
            return Err(ApiError::invalid(format!(
                "expires_in_secs must be between 1 and {MAX_TRANSFER_TTL_SECS}"
            )));
        }
        if file.status != FileStatus::Uploaded {
            return Err(not_uploaded(&file));
        }
        let now = now_micros();
        let transfer = Transfer {
            id: TransferId::new(),
            tenant_id: file.tenant_id.clone(),
            file_id: file.id,
            from,
            from_service,
            recipients: to
                .into_iter()
                .map(|device_id| Recipient {
                    device_id,
                    state: TransferState::Offered,
                })
                .collect(),
            state: TransferState::Offered,
            created_at: now,
            // ttl ≤ 30 days: far inside chrono's range.
            expires_at: now + Duration::seconds(ttl as i64),
            file: TransferredFile {
                name: file.name.clone(),
                size: file.size,
                sha256: file.sha256,
                content_type: file.content_type.clone(),
            },
        };
        match self.ask(CreateTransfer(transfer)).await? {
            Offer::Created(transfer) => {
                self.notifier.do_send(OutboxAppended);
                Ok(*transfer)
            }
            Offer::Refused(refused) => Err(ApiError::new(
                ErrorCode::TransferRefused,
                format!(
                    "{} of the recipients do not accept files from this device",
                    refused.len()
                ),
            )
            .with_member(
                "refused",
                serde_json::Value::from(
                    refused
                        .iter()
                        .map(|d| d.as_str().to_owned())
                        .collect::<Vec<_>>(),
                ),
            )),
            // Deleted or ended between the check above and the transaction.
            Offer::NotUploaded => Err(ApiError::new(
                ErrorCode::NotUploaded,
                "the file is no longer uploaded",
            )),
        }
    }

    /// Loads a transfer the caller is a party to (its sender, a recipient, or a
    /// service of its tenant) and applies the token's checks to `operation` on
    /// the caller's own root (a service: its tenant).
    async fn visible_transfer(
        &self,
        who: &Authenticated,
        id: TransferId,
        operation: Operation,
    ) -> Result<Transfer, ApiError> {
        let transfer = self
            .ask(GetTransfer(id))
            .await?
            .ok_or_else(transfer_not_found)?;
        let identity = &who.identity;
        if transfer.tenant_id != identity.tenant {
            return Err(transfer_not_found());
        }
        let resource = match &identity.principal {
            Principal::Device(me) => {
                if transfer.from.as_ref() != Some(me) && transfer.recipient(me).is_none() {
                    return Err(transfer_not_found());
                }
                Root::Device(me.clone()).resource(&identity.tenant)
            }
            Principal::Service(_) => identity.tenant.to_string(),
        };
        self.authorize(
            who,
            operation,
            &resource,
            Decision::Allow,
            Some(transfer.file_id),
            transfer_not_found,
        )?;
        Ok(transfer)
    }

    /// A transfer the caller is a party to.
    pub async fn transfer(
        &self,
        who: &Authenticated,
        id: TransferId,
    ) -> Result<Transfer, ApiError> {
        let result = self.visible_transfer(who, id, Operation::Read).await;
        self.settle(who, result)
    }

    /// Signs a download of a transfer's file, exactly as a download of one's own
    /// file is signed, while the transfer is neither expired nor revoked.
    pub async fn download_transfer(
        &self,
        who: &Authenticated,
        id: TransferId,
    ) -> Result<SignedRequest, ApiError> {
        let result = async {
            let transfer = self.visible_transfer(who, id, Operation::Read).await?;
            if !transfer.is_live_at(now_micros()) {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "the transfer has ended: nothing to download",
                ));
            }
            let file = self
                .load(transfer.file_id)
                .await?
                .ok_or_else(ApiError::file_not_found)?;
            self.sign_file_download(&file)
        }
        .await;
        self.settle(who, result)
    }

    /// Marks a transfer `received` for the calling recipient (idempotent).
    pub async fn accept(&self, who: &Authenticated, id: TransferId) -> Result<Transfer, ApiError> {
        let result = async {
            let transfer = self.visible_transfer(who, id, Operation::Write).await?;
            let me = match &who.identity.principal {
                Principal::Device(me) if transfer.recipient(me).is_some() => me.clone(),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "only a recipient may accept a transfer",
                    ))
                }
            };
            match self
                .ask(AcceptTransfer {
                    id,
                    recipient: me,
                    now: now_micros(),
                })
                .await?
            {
                TransferChange::Changed(transfer) => {
                    self.notifier.do_send(OutboxAppended);
                    Ok(transfer)
                }
                TransferChange::Unchanged(transfer) => Ok(transfer),
                TransferChange::Conflict(transfer) => Err(ended(&transfer)),
                TransferChange::NotFound => Err(transfer_not_found()),
            }
        }
        .await;
        self.settle(who, result)
    }

    /// Revokes a transfer: its sender or a service (idempotent). Download URLs
    /// already handed out keep working until their own expiry.
    pub async fn revoke(&self, who: &Authenticated, id: TransferId) -> Result<(), ApiError> {
        let result = async {
            let transfer = self.visible_transfer(who, id, Operation::Delete).await?;
            if let Principal::Device(me) = &who.identity.principal {
                if transfer.from.as_ref() != Some(me) {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "only the sender or a service may revoke a transfer",
                    ));
                }
            }
            match self.ask(RevokeTransfer(id)).await? {
                TransferChange::Changed(_) => {
                    self.notifier.do_send(OutboxAppended);
                    Ok(())
                }
                TransferChange::Unchanged(_) => Ok(()),
                TransferChange::Conflict(transfer) => Err(ended(&transfer)),
                TransferChange::NotFound => Err(transfer_not_found()),
            }
        }
        .await;
        self.settle(who, result)
    }

    /// One page of the transfers the caller may list.
    pub async fn list_transfers(
        &self,
        who: &Authenticated,
        request: TransferListRequest,
    ) -> Result<TransferPage, ApiError> {
        let result = self.transfer_page(who, request).await;
        self.settle(who, result)
    }

    async fn transfer_page(
        &self,
        who: &Authenticated,
        request: TransferListRequest,
    ) -> Result<TransferPage, ApiError> {
        let identity = &who.identity;
        let (side, resource) = match (&identity.principal, request.direction) {
            (Principal::Device(me), None | Some(Direction::In)) => (
                TransferSide::To(me.clone()),
                Root::Device(me.clone()).resource(&identity.tenant),
            ),
            (Principal::Device(me), Some(Direction::Out)) => (
                TransferSide::From(me.clone()),
                Root::Device(me.clone()).resource(&identity.tenant),
            ),
            (Principal::Service(_), None | Some(Direction::Out)) => {
                (TransferSide::All, identity.tenant.to_string())
            }
            (Principal::Service(_), Some(Direction::In)) => return Err(ApiError::invalid(
                "a service has no inbox: list with direction=out (every transfer of the tenant)",
            )),
        };
        self.authorize(
            who,
            Operation::List,
            &resource,
            Decision::Allow,
            None,
            transfer_not_found,
        )?;
        let limit = page_limit(request.limit)?;
        let before = page_cursor(request.cursor.as_deref(), |text| {
            TransferCursor::decode(text).map(|c| c.0)
        })?;
        let mut transfers = self
            .ask(ListTransfers {
                tenant: identity.tenant.clone(),
                side,
                state: request.state,
                before,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = cut_page(&mut transfers, limit, |t| TransferCursor(t.id).encode());
        Ok(TransferPage {
            transfers,
            next_cursor,
        })
    }

    /// Expires live transfers past their `expires_at`, batch after batch (the
    /// reconciler's path); returns how many expired.
    pub async fn expire_transfers(&self, batch_size: i64) -> Result<usize, ApiError> {
        let mut total = 0;
        loop {
            let expired = self
                .ask(ExpireTransfers {
                    now: now_micros(),
                    limit: batch_size,
                })
                .await?;
            if !expired.is_empty() {
                self.notifier.do_send(OutboxAppended);
            }
            total += expired.len();
            if (expired.len() as i64) < batch_size {
                return Ok(total);
            }
        }
    }
}

/// 409 for a change asked of a transfer that has ended.
fn ended(transfer: &Transfer) -> ApiError {
    // Still live in the database: refused only because `expires_at` has passed
    // and the reconciler has not recorded it yet.
    let state = if transfer.state.is_live() {
        TransferState::Expired
    } else {
        transfer.state
    };
    ApiError::new(ErrorCode::Conflict, format!("the transfer is {state}"))
}
