//! The OpenAPI document at `/api/v1/openapi.json` (issue 14): valid
//! OpenAPI 3, and describing exactly the routes the app mounts. The routes
//! are read from actix's own resource map and probed method by method, not
//! from the document's source, so a route added without `#[utoipa::path]`
//! fails here. Also the regressions `make fuzz-api` (schemathesis) found.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use actix_web::dev::Service as _;
use actix_web::http::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;
use crate::helpers::app::error_code;
use crate::helpers::db::TestDb;
use crate::helpers::report::record;

const AREA: &str = "openapi";

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::TRACE,
];

#[actix_rt::test]
async fn the_document_is_openapi_3_and_covers_every_route() {
    for dev in [false, true] {
        let app = if dev {
            TestApp::spawn_on(TestDb::migrated(), &["--dev"]).await
        } else {
            TestApp::spawn().await
        };
        let (status, doc) = app.get("/api/v1/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        check_is_openapi_3(&doc);

        let documented = operations(&doc);
        let mounted = mounted_routes(&app).await;
        assert!(
            mounted.contains(&("GET".to_owned(), "/health/live".to_owned())) && mounted.len() >= 14,
            "the route walk found too little: {mounted:?}"
        );
        let undocumented: Vec<_> = mounted.difference(&documented).collect();
        let unmounted: Vec<_> = documented.difference(&mounted).collect();
        assert!(
            undocumented.is_empty() && unmounted.is_empty(),
            "dev={dev}: mounted but not documented: {undocumented:?}; documented but not mounted: {unmounted:?}"
        );
        let dev_token = ("POST".to_owned(), "/api/v1/dev/token".to_owned());
        assert_eq!(
            documented.contains(&dev_token),
            dev,
            "the dev route follows --dev"
        );
        record(
            AREA,
            &format!("document against the mounted routes (dev={dev})"),
            "every mounted route documented, nothing else",
            &[("operations", documented.len().to_string())],
        );
    }
}

/// The parts of OpenAPI 3.1 a client generator or schemathesis relies on.
fn check_is_openapi_3(doc: &Value) {
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["type"], "http");
    assert_eq!(schemes["scheme"], "bearer");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("ErrorBody"), "{:?}", schemas.keys());
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let name = reference.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "dangling $ref {reference}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|status| status.starts_with('2')),
                "{method} {path} documents no success"
            );
            // Every error is the one error body.
            for (status, response) in responses {
                if status.starts_with('4') || (status.starts_with('5') && path != "/health/ready") {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            let secured = operation.get("security").is_some();
            let public = path.starts_with("/health")
                || [
                    "/metrics",
                    "/api/v1/openapi.json",
                    "/api/v1/client-config",
                    "/api/v1/dev/token",
                ]
                .contains(&path.as_str());
            assert_eq!(secured, !public, "{method} {path}: bearer security");
            if secured {
                assert!(responses.contains_key("401"), "{method} {path} lacks its 401");
            }
        }
    }
    // The ranges the handlers enforce are in the document.
    let limit = doc["paths"]["/api/v1/matching/profiles/scroll"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    // An integer 1..=100, or blank for the default.
    let integer = &limit["schema"]["oneOf"][0];
    assert_eq!(
        (&integer["minimum"], &integer["maximum"]),
        (&1.into(), &100.into()),
        "{limit}"
    );
    assert_eq!(limit["schema"]["oneOf"][1]["pattern"], r"^\s*$", "{limit}");
}

fn collect_refs<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                refs.push(reference);
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The routes `app` really serves: the patterns of actix's resource map
/// (scopes joined to their resources), each tried with every method; a
/// method is mounted unless the answer is the 405 of a known path or the
/// fallback's 404.
async fn mounted_routes(app: &TestApp) -> BTreeSet<(String, String)> {
    let dump: Rc<RefCell<String>> = Rc::default();
    let seen = Rc::clone(&dump);
    let service =
        actix_web::test::init_service(aurum::build_app(app.state.clone()).wrap_fn(move |req, service| {
            *seen.borrow_mut() = format!("{:#?}", req.resource_map());
            service.call(req)
        }))
        .await;
    let first = actix_web::test::TestRequest::get()
        .uri("/health/live")
        .to_request();
    let _ = actix_web::test::call_service(&service, first).await;
    let patterns = resource_patterns(&dump.borrow());

    let mut mounted = BTreeSet::new();
    for pattern in patterns {
        // A path parameter gets a value of its type (all are ids).
        let path = pattern.replace("{id}", "1");
        for method in METHODS {
            let req = actix_web::test::TestRequest::default()
                .method(method.clone())
                .uri(&path)
                .to_request();
            let res = actix_web::test::call_service(&service, req).await;
            let status = res.status();
            // `/metrics` answers text: only errors need reading.
            let body: Value =
                serde_json::from_slice(&actix_web::test::read_body(res).await).unwrap_or_default();
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no route for")));
            if !unrouted {
                mounted.insert((method.to_string(), pattern.clone()));
            }
        }
    }
    mounted
}

/// The full patterns of the leaves of a `ResourceMap`'s pretty debug dump:
/// each node opens with `ResourceMap {` indented by its depth, names its
/// pattern first, and is a resource when its `nodes` are `None`.
fn resource_patterns(dump: &str) -> Vec<String> {
    // (indent, pattern) of the nodes enclosing the current line.
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut leaves = Vec::new();
    let mut lines = dump.lines();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        match line.trim() {
            "ResourceMap {" => {
                while stack.last().is_some_and(|(depth, _)| *depth >= indent) {
                    stack.pop();
                }
                stack.push((indent, None));
            }
            "patterns: Single(" => {
                let pattern = lines.next().unwrap().trim().trim_end_matches(',');
                let pattern: String = serde_json::from_str(pattern).unwrap();
                if let Some((_, top @ None)) = stack.last_mut() {
                    *top = Some(pattern);
                }
            }
            "nodes: None," => {
                leaves.push(stack.iter().filter_map(|(_, p)| p.as_deref()).collect());
            }
            _ => {}
        }
    }
    leaves
}

#[actix_rt::test]
async fn another_method_on_a_route_is_a_405_naming_the_allowed_ones() {
    // Found by schemathesis: these were the fallback's 404, as for a path
    // that does not exist.
    let app = TestApp::spawn().await;
    let token = app.token(1);
    for (method, path, allow) in [
        (Method::TRACE, "/health", "GET"),
        (Method::POST, "/health/ready", "GET"),
        (Method::DELETE, "/api/v1/profiles/me", "GET, PUT"),
        (Method::PATCH, "/api/v1/profiles/7", "GET"),
        (Method::GET, "/api/v1/admin/profiles/7/verification", "POST"),
        (Method::PUT, "/api/v1/conversations", "GET"),
        (Method::POST, "/metrics", "GET"),
    ] {
        let res = awc::Client::new()
            .request(method.clone(), format!("{}{path}", app.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(res.headers().get("allow").unwrap(), allow, "{method} {path}");
        let (status, body) = app.request(method.clone(), path, Some(&token), None).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        );
    }
    // A path that does not exist is still a 404, whatever the method.
    let (status, body) = app
        .request(Method::TRACE, "/api/v1/nothing", Some(&token), None)
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    record(
        AREA,
        "another method on a known path (TRACE, PATCH, DELETE, ...)",
        "405 method_not_allowed with Allow",
        &[("paths", "7".to_owned())],
    );
}

#[actix_rt::test]
async fn scroll_filters_are_capped_as_the_profile_fields() {
    // Found by schemathesis: a filter of any length was taken (and
    // answered an empty page), against the document's maxLength.
    let app = TestApp::spawn().await;
    let token = app.token(1);
    for (name, max) in [("religion", 50), ("city", 100)] {
        let at_max = "a".repeat(max);
        let (status, _) = app
            .get(
                &format!("/api/v1/matching/profiles/scroll?{name}={at_max}"),
                Some(&token),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{name} of {max}");
        let over = "a".repeat(max + 1);
        let (status, body) = app
            .get(
                &format!("/api/v1/matching/profiles/scroll?{name}={over}"),
                Some(&token),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::BAD_REQUEST, "invalid_filter"),
            "{name}"
        );
    }
    record(
        AREA,
        "scroll religion/city filter one character over the field's cap",
        "400 invalid_filter (at the cap: 200)",
        &[("caps", "religion 50, city 100".to_owned())],
    );
}
