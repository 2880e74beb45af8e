//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the `api` types' schema derives.
//!
//! The committed copy is `openapi/openapi.json`; the `openapi_is_in_sync`
//! test fails when it and the code disagree (`SBCFTP_BLESS=1` rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SBCFTP tracker",
        description = "The central index of a semi-distributed file-sharing system: which peers \
                       are online and which files (by BLAKE3 hash) each one shares. File bytes \
                       never pass through it. Errors are RFC 9457 `application/problem+json`."
    ),
    modifiers(&BearerAuth),
    components(schemas(sbcftp_api::Problem, sbcftp_api::FileEntry)),
    tags(
        (name = "peers", description = "Registration, liveness and file lists"),
        (name = "files", description = "Search and list contents"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token returned at registration (or, on POST /api/v1/peers of a \
                         private tracker, the registration key)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's top level (info, tags, security schemes), without paths.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The complete document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::routes::api_router().into_openapi()
}

/// The complete document as pretty JSON with a trailing newline, exactly as
/// committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render OpenAPI: {e}\"}}"));
    s.push('\n');
    s
}
