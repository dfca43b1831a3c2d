//! `ApiJson<T>`: the JSON body extractor whose every rejection is one of our error codes
//! (`unsupported_media_type`, `payload_too_large`, `invalid_json`), never axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(request, state).await?;
        parse(&bytes).map(ApiJson)
    }
}

/// Like [`ApiJson`] for a body that may be left out: an empty (or all-whitespace) body is
/// `T::default()`, whatever its content type; any other body must be JSON, with the same
/// rejections (`415`, `413`, `408`, `400`) as [`ApiJson`].
pub struct OptionalApiJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers().get(header::CONTENT_TYPE));
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(OptionalApiJson)
    }
}

/// Most bytes of an oversized body read (and dropped) before its `413` is sent. A client that
/// writes the whole body before it reads (Python's urllib does) would otherwise have its
/// connection reset under it and never see the answer: closing a socket with unread data
/// sends an RST (measured before this: urllib got a broken pipe on a 20 MB body where curl,
/// which waits for `100 Continue`, got the 413). Past this the connection is just closed:
/// the work is bounded, and reading a body costs bandwidth, never memory.
const OVERSIZED_DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The whole body, within the body cap and the body timeout, or our error for why not.
async fn read_body<S: Send + Sync>(request: Request, _state: &S) -> Result<Bytes, ApiError> {
    let limit = request
        .extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = ApiError::PayloadTooLarge { limit };
    if let Some(length) = declared
        && length > limit as u64
    {
        // A client waiting for `100 Continue` sends nothing more: answer at once. So does a
        // body too large to be worth reading.
        let waits = request.headers().contains_key(header::EXPECT);
        if !waits && length <= OVERSIZED_DRAIN_BYTES {
            drain(request.into_body(), 0).await;
        }
        return Err(too_large);
    }
    let mut body = request.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|err| read_failed(&err))?;
        if bytes.len() + chunk.len() > limit {
            drain_stream(body, (bytes.len() + chunk.len()) as u64).await;
            return Err(too_large);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// The whole body whatever its content type (a dialect whose clients send JSON as
/// `text/plain`), with the same cap, timeout and errors as [`ApiJson`].
pub async fn read_any_body(request: Request) -> Result<Bytes, ApiError> {
    read_body(request, &()).await
}

/// Reads what is left of `body` and drops it, up to [`OVERSIZED_DRAIN_BYTES`] in all (the
/// body timeout still bounds the time).
async fn drain(body: axum::body::Body, read: u64) {
    drain_stream(body.into_data_stream(), read).await;
}

async fn drain_stream(mut body: axum::body::BodyDataStream, mut read: u64) {
    while read <= OVERSIZED_DRAIN_BYTES {
        match body.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Why a body that was arriving could not be read.
fn read_failed(err: &axum::Error) -> ApiError {
    if timed_out(err) {
        ApiError::RequestTimeout
    } else {
        ApiError::InvalidJson("the request body could not be read".to_owned())
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::InvalidJson(format!("the body is not valid JSON for this route: {e}"))
    })
}

/// The body's arrival outlasted the server's body timeout (`server.body_timeout_secs`).
fn timed_out(err: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The configured body cap, put in request extensions so the rejection can state it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let v = |s: &'static str| header::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(Some(&v("application/x-www-form-urlencoded"))));
        assert!(!is_json(None));
    }
}
