//! Request extractors that turn every malformed request into an `ApiError` naming the field:
//! JSON bodies, query strings, the Idempotency-Key header and the request id.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

/// A JSON body. Bodies are deserialised into structs with `deny_unknown_fields`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        // serde accepts an array for a struct; our bodies are objects, so say so plainly.
        if bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'[')
        {
            return Err(ApiError::BodyNotObject);
        }
        // Syntax first (including trailing bytes), then shape, so each gets its own error.
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        let value = serde_path_to_error::deserialize(json)
            .map_err(|e| data_error(e.path().to_string(), &e.into_inner().to_string()))?;
        Ok(ApiJson(value))
    }
}

/// An optional JSON body: none when the request carries no Content-Type and no content.
impl<S: Send + Sync, T: DeserializeOwned> axum::extract::OptionalFromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == "0");
        if empty && !req.headers().contains_key(header::CONTENT_TYPE) {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// The configured body limit, put in the request extensions by the router so the JSON
/// extractor can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A query string, deserialised into a struct with `deny_unknown_fields`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                data_error(path, &e.into_inner().to_string())
            })
    }
}

/// Maps a serde data error at `path` to a 422 that names the field.
fn data_error(path: String, message: &str) -> ApiError {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    // Some deserialisers already put the offending key at the end of the path.
    let join = |field: String| {
        if path == "." || path == field {
            field
        } else if path.ends_with(&format!(".{field}")) {
            path.clone()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = quoted("unknown field `") {
        ApiError::invalid(
            "unknown_field",
            join(field.clone()),
            format!("unknown field `{field}`"),
        )
    } else if let Some(field) = quoted("missing field `") {
        ApiError::invalid(
            "missing_field",
            join(field.clone()),
            format!("{field} is required"),
        )
    } else {
        let message = message.split(" at line ").next().unwrap_or(message);
        ApiError::invalid("invalid_field", path.clone(), format!("{path}: {message}"))
    }
}

/// The `Idempotency-Key` header, required on every POST that moves or reserves money.
pub struct IdempotencyKey(pub String);

pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// An idempotency key is 1-255 visible ASCII characters (the header's, or a batch item's).
pub fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    if !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key",
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::invalid(
                "missing_idempotency_key",
                "Idempotency-Key",
                "this request moves money and needs an Idempotency-Key header",
            )
        })?;
        let key = value.to_str().unwrap_or("\u{7f}");
        check_idempotency_key(key)?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

/// The request id set by the router (or sent by the caller as `x-request-id`).
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        ))
    }
}

/// The address the request came from (the TCP peer: behind a proxy, the proxy's), when the
/// server recorded it; None for handlers called in-process (the console's).
pub struct SourceAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SourceAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| super::throttle::source_key(c.0.ip())),
        ))
    }
}
