//! The OpenAPI 3.1 document of the REST API, served at
//! `/api/v1/openapi.json`: generated from the handlers' `#[utoipa::path]`
//! attributes and the types they serialize, so it changes with the code.
//! `tests/it/openapi.rs` checks that every mounted route is in it.

use std::sync::OnceLock;

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi as _;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::handlers::{admin, conversations, health, profiles, web as web_client};
use crate::state::AppState;

// The error responses most operations share, described once.
pub const UNAUTHORIZED: &str = "No, a malformed, expired or foreign bearer token (`unauthorized`)";
pub const DB_UNAVAILABLE: &str =
    "The database is unreachable or its pool exhausted (`db_unavailable`); retry shortly";
pub const RATE_LIMITED: &str =
    "Over the member's rate for this endpoint (`rate_limited`); `Retry-After` says how many seconds to wait";
pub const PAYLOAD_TOO_LARGE: &str = "A body over 64 KiB (`payload_too_large`)";
pub const UNSUPPORTED_MEDIA_TYPE: &str =
    "A body that is not `Content-Type: application/json` (`unsupported_media_type`)";

/// The path of the dev-only route, left out of the document without `--dev`
/// as it is left unmounted.
const DEV_TOKEN_PATH: &str = "/api/v1/dev/token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Aurum REST API",
        description = "Profiles, conversation history and operations endpoints of an Aurum node. \
            Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code`. \
            Chat itself is Socket.IO on WS_BIND, not described here.",
    ),
    paths(
        profiles::scroll::scroll_profiles,
        profiles::batch::batch_profiles,
        profiles::get_own::get_own_profile,
        profiles::put_own::put_own_profile,
        profiles::get::get_profile,
        admin::verify_profile::verify_profile,
        conversations::list::list_conversations,
        conversations::messages::list_messages,
        web_client::client_config::get_client_config,
        web_client::dev_token::create_dev_token,
        get_openapi,
        health::health,
        health::live,
        health::ready,
        crate::metrics::render,
    ),
    modifiers(&BearerJwt),
    tags(
        (name = "profiles", description = "Members' profiles"),
        (name = "conversations", description = "The chat's history"),
        (name = "admin", description = "Needs a token with `role: admin`"),
        (name = "web", description = "What the web client needs"),
        (name = "operations", description = "Probes, metrics and this document"),
    ),
)]
struct ApiDoc;

/// `Authorization: Bearer <HS256 JWT>` with `sub` (the member id) and `exp`.
struct BearerJwt;

impl utoipa::Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "HS256 JWT: `sub` the member's id, `exp`, optional `role: admin` (`aurum token`)".to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document for a node with (`dev`) or without the dev-only routes.
pub fn document(dev: bool) -> utoipa::openapi::OpenApi {
    let mut openapi = ApiDoc::openapi();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if !dev {
        openapi.paths.paths.remove(DEV_TOKEN_PATH);
    }
    openapi
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
)]
pub async fn get_openapi(state: web::Data<AppState>) -> HttpResponse {
    // Built once per kind of node: it depends on nothing else at run time.
    static DOCUMENTS: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    let dev = state.config.dev;
    let json = DOCUMENTS[usize::from(dev)].get_or_init(|| {
        document(dev).to_json().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot serialize the OpenAPI document");
            String::new()
        })
    });
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(json.clone())
}

// Query parameters read as text: a blank value means "not given" (the
// handlers' rule, kept by tests/it/hardening_rest.rs), so the document
// admits blank text beside the values the parsing takes.
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type};

fn or_empty(value: ObjectBuilder) -> Schema {
    // Blank, as the handlers trim what they read.
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^\s*$"));
    Schema::OneOf(OneOfBuilder::new().item(value).item(empty).build())
}

fn integer_or_empty(minimum: Option<i64>, maximum: Option<i64>) -> Schema {
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(minimum)
            .maximum(maximum),
    )
}

/// A page's `limit`: 1 to 100.
pub fn limit_param() -> Schema {
    integer_or_empty(Some(1), Some(100))
}

/// An age filter in whole years: 18 to 120.
pub fn age_param() -> Schema {
    integer_or_empty(Some(18), Some(120))
}

/// A message id bound (`before`, `after`).
pub fn message_id_param() -> Schema {
    integer_or_empty(Some(0), None)
}

/// The gender filter.
pub fn gender_param() -> Schema {
    or_empty(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["male", "female"])),
    )
}
