//! The web client: the files `aurum serve` serves at `/`, the routes the
//! page relies on, and the page itself in a real browser (Chromium, driven
//! by playwright-core from web/node_modules) against the in-process server.

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::app::error_code;
use crate::helpers::{TestApp, TestDb};

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/web");

fn web_dist_is_built() {
    assert!(
        std::path::Path::new(WEB).join("dist/index.html").is_file(),
        "web/dist is not built: run `make web` first (make test does)"
    );
}

/// The status, content type and body of a GET, whatever the body is.
async fn get_raw(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let mut response = awc::Client::new()
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.body().limit(4 * 1024 * 1024).await.unwrap();
    (
        response.status(),
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[actix_rt::test]
async fn the_page_and_its_assets_are_served_and_the_api_keeps_its_routes() {
    web_dist_is_built();
    let app = TestApp::spawn_web().await;
    let (status, content_type, page) = get_raw(&app, "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(page.contains("<div id=\"root\">"), "{page}");
    // Every script and stylesheet the page names is served with its type.
    let assets: Vec<&str> = page
        .split("\"./assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{page}");
    for asset in assets {
        let (status, content_type, body) = get_raw(&app, &format!("/assets/{asset}")).await;
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty());
        let expected = if asset.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(content_type.starts_with(expected), "{asset}: {content_type}");
    }
    // The API, health and metrics are never the page.
    let (status, body) = app.get("/api/v1/no-such-route", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = app.get("/health", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get("/api/v1/matching/profiles/scroll", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Nothing outside the folder, no hidden files, no other methods.
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/.gitignore",
        "/no-such-file.js",
    ] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    let (status, body) = app.request(Method::POST, "/", None, None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[actix_rt::test]
async fn without_a_built_client_the_page_is_a_json_error_and_the_rest_works() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--web-dir=/nonexistent/aurum-web"]).await;
    let (status, body) = app.get("/", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "web_client_not_built");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/aurum-web"),
        "{body}"
    );
    let (status, _) = app.get("/health/live", None).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn client_config_points_the_page_at_the_socket_listener() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/client-config", None).await;
    assert_eq!(status, 200, "{body}");
    let ws_port = app.ws_base.rsplit(':').next().unwrap();
    assert_eq!(body["socket_url"], format!("http://127.0.0.1:{ws_port}"));
    assert_eq!(body["dev"], false);

    let app = TestApp::spawn_on(TestDb::migrated(), &["--public-socket-url=https://chat.example/"]).await;
    let (_, body) = app.get("/api/v1/client-config", None).await;
    assert_eq!(body["socket_url"], "https://chat.example");
}

#[actix_rt::test]
async fn the_dev_sign_in_exists_under_dev_only() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/dev/token",
            None,
            Some(&json!({ "user_id": 3 })),
        )
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let app = TestApp::spawn_on(TestDb::migrated(), &["--dev"]).await;
    app.seed(1, 5, 3).await;
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/dev/token",
            None,
            Some(&json!({ "user_id": 3 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], 3);
    let token = body["token"].as_str().unwrap();
    let (status, body) = app.get("/api/v1/profiles/me", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], 3);
    let (status, body) = app
        .request(
            Method::POST,
            "/api/v1/dev/token",
            None,
            Some(&json!({ "user_id": -1 })),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_user_id")
    );
    let (_, body) = app.get("/api/v1/client-config", None).await;
    assert_eq!(body["dev"], true);
}

/// Two members in two browser contexts: scrolling 200+ profiles with one
/// batch call per burst, a chat with live delivery, typing, read receipts,
/// a reload, and the network cut and restored (web/tests/browser.test.mjs).
#[actix_rt::test]
async fn the_web_client_works_in_a_real_browser() {
    web_dist_is_built();
    let chromium = std::env::var("AURUM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no browser at {chromium}: install Debian's `chromium` (.ci/run does) or set AURUM_CHROMIUM"
    );
    assert!(
        std::path::Path::new(WEB)
            .join("node_modules/playwright-core")
            .exists(),
        "run `npm ci` in web/ first (make test does)"
    );
    let app = TestApp::spawn_web().await;
    // 400 members, about 280 of them approved: more than 200 to scroll.
    app.seed(1, 400, 21).await;
    let (a, b) = (1_i64, 2_i64);
    let mut command = tokio::process::Command::new("node");
    command
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg("tests/browser.test.mjs")
        .current_dir(WEB)
        .env("AURUM_WEB_URL", &app.base)
        .env("AURUM_CHROMIUM", &chromium)
        .env("AURUM_TOKEN_A", app.token(a))
        .env("AURUM_TOKEN_B", app.token(b))
        .env("AURUM_USER_A", a.to_string())
        .env("AURUM_USER_B", b.to_string())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("node is installed");
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), child.wait())
        .await
        .expect("the browser test finished within two minutes")
        .unwrap();
    assert!(status.success(), "the browser test failed: {status}");
}
