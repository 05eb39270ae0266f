//! The built web client (WEB_DIR), served for GET and HEAD requests that no
//! route took. A small handler rather than a file-server crate: the folder
//! holds a handful of files Vite wrote, and the rules are few (no listing,
//! no dot-files, no `..`, hashed assets cached for good, `index.html`
//! never cached so a rebuilt page is picked up).

use std::path::{Path, PathBuf};

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;
use crate::state::AppState;

const INDEX: &str = "index.html";

pub async fn serve_web_file(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let dir = &state.config.web_dir;
    let Some(relative) = safe_relative_path(req.path()) else {
        return not_found(&req);
    };
    let file = dir.join(&relative);
    // On actix's blocking pool: a file read must not stall the worker.
    let read = {
        let file = file.clone();
        web::block(move || std::fs::read(file)).await
    };
    match read {
        Ok(Ok(bytes)) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, content_type(&file)))
            .insert_header((CACHE_CONTROL, cache_control(&relative)))
            .body(bytes),
        _ if !dir.join(INDEX).is_file() => not_built(dir),
        _ => not_found(&req),
    }
}

/// The request path as a path inside the folder, or `None` for anything
/// that could step outside it or reach a hidden file. Only the characters
/// Vite's file names use are accepted, so no percent-decoding is needed.
fn safe_relative_path(path: &str) -> Option<PathBuf> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Some(PathBuf::from(INDEX));
    }
    let mut relative = PathBuf::new();
    for segment in trimmed.split('/') {
        let allowed = !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !allowed {
            return None;
        }
        relative.push(segment);
    }
    Some(relative)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|ext| ext.to_str()).unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Vite names what it puts under `assets/` by a hash of the content, so a
/// new build has new names and the old ones can be kept for a year.
fn cache_control(relative: &Path) -> &'static str {
    if relative.starts_with("assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

fn not_built(dir: &Path) -> HttpResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "web_client_not_built",
        format!(
            "the web client is not built: no index.html in WEB_DIR={} (run `make web`, or set WEB_DIR)",
            dir.display()
        ),
    )
    .error_response()
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        assert_eq!(safe_relative_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(
            safe_relative_path("/assets/index-B1x_9.js"),
            Some(PathBuf::from("assets/index-B1x_9.js"))
        );
        for bad in [
            "/../Cargo.toml",
            "/assets/../../x",
            "/.env",
            "/a//b",
            "/%2e%2e/x",
            "/a\\b",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashed_assets_are_cached_and_the_page_is_not() {
        assert_eq!(cache_control(Path::new("index.html")), "no-cache");
        assert!(cache_control(Path::new("assets/index-abc.js")).contains("immutable"));
        assert_eq!(
            content_type(Path::new("a/b.js")),
            "text/javascript; charset=utf-8"
        );
    }
}
