//! Every route, mounted in one place, and the extractor settings that turn
//! malformed input into JSON errors instead of actix's plain-text ones.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, guard, web};

use crate::error::ApiError;
use crate::handlers::{admin, conversations, health, profiles, web as web_client};

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
            )
            .route("/client-config", web::get().to(web_client::get_client_config))
            .route(
                "/dev/token",
                web::post()
                    .guard(guard::fn_guard(web_client::dev_only))
                    .to(web_client::create_dev_token),
            ),
    )
    .default_service(web::to(fallback));
}

/// What no route took: the web client's files for a page load (GET or
/// HEAD outside the API's prefixes), a JSON 404 for everything else, so
/// an unknown API path never answers with the page.
async fn fallback(state: web::Data<crate::state::AppState>, req: HttpRequest) -> HttpResponse {
    let path = req.path();
    let api = ["/api", "/health", "/metrics"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")));
    if !api && (req.method() == Method::GET || req.method() == Method::HEAD) {
        return web_client::serve_web_file(state, req).await;
    }
    not_found(&req)
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}
