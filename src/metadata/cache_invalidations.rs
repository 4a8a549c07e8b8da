//! Invalidations of the shared cache requested through the database: an instance
//! whose write-through never reached Redis counts one here, where every instance
//! sees it even while that instance cannot reach Redis (see
//! [`crate::cache::invalidations`]).

use actix::{Handler, Message};
use diesel::prelude::*;

use super::schema::cache_invalidations;
use super::{MetadataStore, StoreError};

/// The key of the table's one row.
const ROW: i32 = 1;

/// Counts one more requested invalidation.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RequestCacheInvalidation;

/// Invalidations requested so far, by every instance.
#[derive(Message)]
#[rtype(result = "Result<i64, StoreError>")]
pub struct CacheInvalidations;

impl Handler<RequestCacheInvalidation> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, _: RequestCacheInvalidation, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        diesel::update(cache_invalidations::table.find(ROW))
            .set(cache_invalidations::requested.eq(cache_invalidations::requested + 1))
            .execute(&mut *conn)?;
        Ok(())
    }
}

impl Handler<CacheInvalidations> for MetadataStore {
    type Result = Result<i64, StoreError>;
    fn handle(&mut self, _: CacheInvalidations, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        Ok(cache_invalidations::table
            .find(ROW)
            .select(cache_invalidations::requested)
            .first(&mut *conn)?)
    }
}
