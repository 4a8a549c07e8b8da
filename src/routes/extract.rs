//! Request extractors shared by the API handlers: the authenticated caller and the
//! file id of the path, parsed once, before the handler runs.

use std::future::{ready, Future, Ready};
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use super::caller;
use crate::auth::Authenticated;
use crate::domain::FileId;
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;

/// The verified caller of a request (see [`caller`]).
pub struct Caller(pub Authenticated);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let service = req
                .app_data::<web::Data<FileService>>()
                .ok_or_else(|| ApiError::internal("the file service is not registered"))?
                .clone();
            caller(&req, &service).await.map(Caller)
        })
    }
}

/// The `{id}` of a `/v1/files/{id}…` path; one that is not a UUID is "not found".
pub struct FileIdParam(pub FileId);

impl FromRequest for FileIdParam {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .match_info()
            .get("id")
            .and_then(|raw| raw.parse().ok())
            .map(FileIdParam)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such file (file ids are UUIDs)"));
        ready(id)
    }
}

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
