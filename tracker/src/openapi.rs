//! The OpenAPI document: the top level (info, tags, security scheme) here,
//! the paths from the handlers' `#[utoipa::path]` attributes (collected by
//! `routes::api_router`), the schemas from `sbcftp_api`'s derives.
//!
//! Routes list their error answers by status and description only;
//! `ProblemBodies` gives each the problem+json body, so the document says
//! in one place what the tracker does everywhere: every error is an RFC 9457
//! problem document.
//!
//! The committed copy is `openapi/openapi.json`; the `openapi_is_in_sync`
//! test fails when it and the code disagree (`SBCFTP_BLESS=1` rewrites it).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::error::PROBLEM_JSON;

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

/// Gives every 4xx and 5xx answer without a body the `Problem` body as
/// `application/problem+json`.
struct ProblemBodies;

impl Modify for ProblemBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for (status, response) in &mut op.responses.responses {
                    let is_error = status.starts_with('4') || status.starts_with('5');
                    if let RefOr::T(r) = response
                        && is_error
                        && r.content.is_empty()
                    {
                        r.content
                            .insert(PROBLEM_JSON.to_owned(), RefOr::T(body.clone()));
                    }
                }
            }
        }
    }
}

/// The complete document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::routes::api_router().into_openapi());
    ProblemBodies.modify(&mut doc);
    doc
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
