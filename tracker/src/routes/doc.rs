//! OpenAPI descriptions of the error answers that several routes share.
//!
//! A route lists its errors by status and description only, alone or
//! through these groups; `openapi.rs` gives every 4xx/5xx answer of the
//! document the same `application/problem+json` body, the one the
//! tracker sends for every error.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{RefOr, ResponseBuilder, response::Response};

/// Error answers by status, each with its description.
fn described(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new().description(*description).build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// 429, 503: every route that reads or writes the database (all of them
/// pass the per-address rate limit and the service-wide request limit).
#[derive(Debug)]
pub struct DatabaseErrors;

impl IntoResponses for DatabaseErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described(&[
            (
                429,
                "Over a per-address limit (`--requests-per-ip`; registration also \
                 `--max-peers-per-ip`, `--max-files-per-ip`); see `Retry-After`",
            ),
            (
                503,
                "Database unavailable, or too many requests at once \
                 (`--max-connections`); retry after `Retry-After`",
            ),
        ])
    }
}

/// 401, 403, 404: the routes that take an `AuthPeer`.
#[derive(Debug)]
pub struct PeerAuthErrors;

impl IntoResponses for PeerAuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described(&[
            (401, "No bearer token"),
            (403, "Wrong token"),
            (404, "Unknown (or swept) peer: register again"),
        ])
    }
}

/// 400, 413, 415: the routes with a JSON body (422 differs per route).
#[derive(Debug)]
pub struct JsonBodyErrors;

impl IntoResponses for JsonBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        described(&[
            (400, "Malformed JSON"),
            (413, "Body too large"),
            (415, "Not application/json"),
        ])
    }
}
