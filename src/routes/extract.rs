//! Request extractors shared by the API handlers: the authenticated caller, then
//! what else the handler reads (the file id of the path, the query, the body), so
//! the caller is known before anything else of the request is judged.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use serde::Deserialize;

use super::caller;
use crate::auth::Authenticated;
use crate::domain::{BatchId, DeviceId, FileId, JobId, TransferId};
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;

/// The verified caller, then `T` extracted from the request. actix-web runs a
/// handler's extractors side by side and answers the first error, so a malformed id
/// or query could be answered before a bad token is; here nothing of the request is
/// read until the caller is authenticated (401 first), and what `T` refuses is
/// answered 401 instead when the caller's token has expired.
pub struct CallerThen<T>(pub Authenticated, pub T);

impl<T> FromRequest for CallerThen<T>
where
    T: FromRequest + 'static,
    T::Error: Into<actix_web::Error>,
{
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let service = req
                .app_data::<web::Data<FileService>>()
                .ok_or_else(|| ApiError::internal("the file service is not registered"))?
                .clone();
            let who = caller(&req, &service).await?;
            match T::from_request(&req, &mut payload).await {
                Ok(value) => Ok(CallerThen(who, value)),
                Err(refused) => match service.expired(&who) {
                    Some(expired) => Err(expired.into()),
                    None => Err(refused.into()),
                },
            }
        })
    }
}

/// A request body read as JSON, kept with its error (unreadable, too large, not
/// JSON) so that the caller's authorization is decided before the body is judged.
pub struct JsonBody(Result<serde_json::Value, ApiError>);

impl JsonBody {
    /// The JSON value, when the body is one.
    pub fn value(&self) -> Option<&serde_json::Value> {
        self.0.as_ref().ok()
    }

    /// The body as `T`, which must be a JSON object: the body's own error (415,
    /// 413, 400), else `invalid_request` when it does not describe a `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        JsonObject::<T>::deserialize(self.0?)
            .map(|JsonObject(parsed)| parsed)
            .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}")))
    }
}

impl FromRequest for JsonBody {
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let read = json.await.map(web::Json::into_inner).map_err(|e| {
                // The JSON configuration's error handler made it a problem already.
                e.as_error::<ApiError>()
                    .cloned()
                    .unwrap_or_else(|| ApiError::invalid(e.to_string()))
            });
            Ok(JsonBody(read))
        })
    }
}

/// The path segment `name`, read by `parse`; one it refuses is "not found"
/// (`detail`): a path that names nothing this API has.
fn path_segment<T>(
    req: &HttpRequest,
    name: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    detail: &'static str,
) -> Result<T, ApiError> {
    req.match_info()
        .get(name)
        .and_then(parse)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, detail))
}

/// Declares the extractor of the `{id}` segment of a resource's path: an id that
/// is not a UUID names nothing, so it is "not found".
macro_rules! uuid_path_param {
    ($(#[$doc:meta])* $name:ident($id:ty), $detail:literal) => {
        $(#[$doc])*
        pub struct $name(pub $id);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Ready<Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                ready(path_segment(req, "id", |raw| raw.parse().ok(), $detail).map($name))
            }
        }
    };
}

uuid_path_param!(
    /// The `{id}` of a `/v1/files/{id}…` path; one that is not a UUID is "not found".
    FileIdParam(FileId),
    "no such file (file ids are UUIDs)"
);

uuid_path_param!(
    /// The `{id}` of a `/v1/transfers/{id}…` path; one that is not a UUID is "not found".
    TransferIdParam(TransferId),
    "no such transfer (transfer ids are UUIDs)"
);

uuid_path_param!(
    /// The `{id}` of a `/v1/batches/{id}…` path; one that is not a UUID is "not found".
    BatchIdParam(BatchId),
    "no such batch (batch ids are UUIDs)"
);

uuid_path_param!(
    /// The `{id}` of a `/v1/jobs/{id}…` path; one that is not a UUID is "not found".
    JobIdParam(JobId),
    "no such job (job ids are UUIDs)"
);

/// A JSON body that must be an object: serde would also build a struct from an
/// array of its fields in order, which no client of this API means to send.
pub struct JsonObject<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);

        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectOnly(std::marker::PhantomData))
            .map(JsonObject)
    }
}

/// The `{device}` of a `/v1/devices/{device}…` path; one that is not a device id
/// is "not found".
pub struct DeviceParam(pub DeviceId);

impl FromRequest for DeviceParam {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            path_segment(
                req,
                "device",
                |raw| DeviceId::parse(raw).ok(),
                "no such device inbox",
            )
            .map(DeviceParam),
        )
    }
}
