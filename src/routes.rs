//! Every route, mounted in one place, and the extractor settings that turn
//! malformed input into JSON errors instead of actix's plain-text ones.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::ApiError;
use crate::handlers::{admin, conversations, health, profiles};

/// Largest JSON body accepted (a profile is a few KiB at most).
const JSON_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|err, _| ApiError::bad_request("invalid_query", err.to_string()).into()),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(|err, _| {
                use actix_web::error::JsonPayloadError;
                match &err {
                    JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                        ApiError::new(
                            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            err.to_string(),
                        )
                    }
                    JsonPayloadError::ContentType => ApiError::new(
                        actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "expected `Content-Type: application/json`",
                    ),
                    _ => ApiError::bad_request("invalid_json", err.to_string()),
                }
                .into()
            }),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|err, _| ApiError::bad_request("invalid_path", err.to_string()).into()),
    )
    .service(web::resource("/metrics").route(web::get().to(crate::metrics::render)))
    .service(
        web::scope("/health")
            .route("", web::get().to(health::health))
            .route("/live", web::get().to(health::live))
            .route("/ready", web::get().to(health::ready)),
    )
    .service(
        web::scope("/api/v1")
            .route(
                "/matching/profiles/scroll",
                web::get().to(profiles::scroll_profiles),
            )
            .route(
                "/matching/profiles/batch",
                web::get().to(profiles::batch_profiles),
            )
            // `me` is registered before `{id}` so it is not read as an id.
            .route("/profiles/me", web::get().to(profiles::get_own_profile))
            .route("/profiles/me", web::put().to(profiles::put_own_profile))
            .route("/profiles/{id}", web::get().to(profiles::get_profile))
            .route(
                "/admin/profiles/{id}/verification",
                web::post().to(admin::verify_profile),
            )
            .route("/conversations", web::get().to(conversations::list_conversations))
            .route(
                "/conversations/{id}/messages",
                web::get().to(conversations::list_messages),
            ),
    )
    .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}
