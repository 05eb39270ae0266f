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
    .service(resource("/metrics", &[Method::GET]).route(web::get().to(crate::metrics::render)))
    .service(
        web::scope("/health")
            .service(resource("", &[Method::GET]).route(web::get().to(health::health)))
            .service(resource("/live", &[Method::GET]).route(web::get().to(health::live)))
            .service(resource("/ready", &[Method::GET]).route(web::get().to(health::ready))),
    )
    .service(
        web::scope("/api/v1")
            .service(
                resource("/matching/profiles/scroll", &[Method::GET])
                    .route(web::get().to(profiles::scroll_profiles)),
            )
            .service(
                resource("/matching/profiles/batch", &[Method::GET])
                    .route(web::get().to(profiles::batch_profiles)),
            )
            // `me` is registered before `{id}` so it is not read as an id.
            .service(
                resource("/profiles/me", &[Method::GET, Method::PUT])
                    .route(web::get().to(profiles::get_own_profile))
                    .route(web::put().to(profiles::put_own_profile)),
            )
            .service(resource("/profiles/{id}", &[Method::GET]).route(web::get().to(profiles::get_profile)))
            .service(
                resource("/admin/profiles/{id}/verification", &[Method::POST])
                    .route(web::post().to(admin::verify_profile)),
            )
            .service(
                resource("/conversations", &[Method::GET])
                    .route(web::get().to(conversations::list_conversations)),
            )
            .service(
                resource("/conversations/{id}/messages", &[Method::GET])
                    .route(web::get().to(conversations::list_messages)),
            )
            .service(
                resource("/client-config", &[Method::GET])
                    .route(web::get().to(web_client::get_client_config)),
            )
            .service(
                resource("/openapi.json", &[Method::GET]).route(web::get().to(crate::openapi::get_openapi)),
            )
            .service(
                resource("/dev/token", &[Method::POST])
                    .guard(guard::fn_guard(web_client::dev_only))
                    .route(web::post().to(web_client::create_dev_token)),
            ),
    )
    .default_service(web::to(fallback));
}

/// A route's resource: another method on its path is a 405 naming the
/// methods it takes (`Allow`), not the 404 of a path that does not exist.
fn resource(path: &str, methods: &'static [Method]) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        method_not_allowed(&req, methods)
    }))
}

fn method_not_allowed(req: &HttpRequest, methods: &[Method]) -> HttpResponse {
    use actix_web::ResponseError;
    let allow = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let mut response = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} takes {allow}, not {}", req.path(), req.method()),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
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
