//! Trailing and doubled slashes, removed before routing: `/api/v1/profiles/`
//! and `//api/v1//profiles` reach the same route as `/api/v1/profiles`.
//!
//! actix-web's `NormalizePath::trim()` does the same, but copies every path
//! and runs a regex over it; on the scroll endpoint that was about 1 % of
//! the server's CPU for paths that were nearly always clean already. This
//! checks the path first and rewrites only the rare one that needs it.

use actix_web::dev::ServiceRequest;
use actix_web::http::Uri;
use actix_web::http::uri::PathAndQuery;

/// Rewrites the request's path in place when it has a trailing or doubled
/// slash; a clean path is left untouched and costs one scan.
pub fn normalize(req: &mut ServiceRequest) {
    let path = req.head().uri.path();
    if !needs_normalizing(path) {
        return;
    }
    let mut tidy = String::with_capacity(path.len());
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        tidy.push('/');
        tidy.push_str(segment);
    }
    if tidy.is_empty() {
        tidy.push('/');
    }
    if let Some(query) = req.head().uri.query() {
        tidy.push('?');
        tidy.push_str(query);
    }
    let mut parts = req.head().uri.clone().into_parts();
    // The new text is the old path with slashes taken out, so it parses
    // whenever the old one did; if it somehow does not, routing sees the
    // request as it came.
    let Ok(path_and_query) = PathAndQuery::try_from(tidy) else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    let Ok(uri) = Uri::from_parts(parts) else {
        return;
    };
    req.match_info_mut().get_mut().update(&uri);
    req.head_mut().uri = uri;
}

fn needs_normalizing(path: &str) -> bool {
    (path.len() > 1 && path.ends_with('/')) || path.contains("//")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use actix_web::test::TestRequest;

    use super::*;

    fn normalized(uri: &str) -> (String, String) {
        let mut req = TestRequest::with_uri(uri).to_srv_request();
        normalize(&mut req);
        (req.uri().to_string(), req.match_info().as_str().to_owned())
    }

    #[test]
    fn trims_trailing_and_merges_doubled_slashes_keeping_the_query() {
        for (given, want) in [
            ("/api/v1/profiles/", "/api/v1/profiles"),
            ("//api//v1///profiles//", "/api/v1/profiles"),
            (
                "/api/v1/profiles/?limit=5&x=a//b",
                "/api/v1/profiles?limit=5&x=a//b",
            ),
            ("//", "/"),
        ] {
            let (uri, _) = normalized(given);
            assert_eq!(uri, want, "{given}");
        }
    }

    #[test]
    fn clean_paths_are_left_as_they_are() {
        for given in [
            "/",
            "/health",
            "/api/v1/matching/profiles/scroll?limit=20&cursor=a/b/",
        ] {
            assert_eq!(normalized(given).0, given);
        }
    }

    #[test]
    fn routing_sees_the_normalized_path() {
        let (_, routed) = normalized("/api//v1/profiles/7/");
        assert_eq!(routed, "/api/v1/profiles/7");
    }
}
