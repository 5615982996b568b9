//! `GET /v1/openapi.json`: docs/openapi.yaml (OpenAPI 3.1, the API's
//! contract), embedded in the binary and converted to JSON once.

use std::sync::OnceLock;

use warp::http::HeaderValue;
use warp::reply::Response;

const DOCUMENT: &str = include_str!("../../../docs/openapi.yaml");

/// The document as JSON.
///
/// # Panics
///
/// Never for the shipped document: a unit test parses it.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let value: serde_json::Value =
            serde_norway::from_str(DOCUMENT).expect("docs/openapi.yaml is valid YAML");
        serde_json::to_string(&value).expect("a JSON value serializes")
    })
}

/// The route.
pub fn reply() -> Response {
    let mut r = Response::new(json().into());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, /path/{param})` of every route in `routes()`, read from
    /// its source: each `warp::path!(...)` (or `warp::path::end()`) and the
    /// method filter that follows it.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = &source[source.find("pub fn routes(").unwrap()..];
        let mut found = BTreeSet::new();
        for (i, _) in body.match_indices(" = warp::path") {
            let rest = &body[i..];
            let path = if rest.starts_with(" = warp::path::end()") {
                "/".to_owned()
            } else {
                let open = rest.find("!(").unwrap() + 2;
                let close = open + rest[open..].find(')').unwrap();
                let mut params = 0;
                rest[open..close]
                    .split('/')
                    .map(|seg| {
                        let seg = seg.trim();
                        if seg == "String" {
                            params += 1;
                            format!("{{p{params}}}")
                        } else {
                            seg.trim_matches('"').to_owned()
                        }
                    })
                    .fold(String::new(), |acc, seg| format!("{acc}/{seg}"))
            };
            let statement = &rest[..rest.find(';').unwrap()];
            let method = if statement.contains("warp::post()") {
                "POST"
            } else if statement.contains("warp::get()") {
                "GET"
            } else {
                panic!("route {path} has no method filter")
            };
            found.insert((method.to_owned(), path));
        }
        found
    }

    /// The same from the document, path parameters renamed `{p1}`, `{p2}`.
    fn routes_in_document() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let mut params = 0;
            let path = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        params += 1;
                        format!("{{p{params}}}")
                    } else {
                        seg.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let path = if path.is_empty() { "/".into() } else { path };
            for method in item.as_object().unwrap().keys() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn every_route_is_in_the_document_and_the_reverse() {
        let (code, doc) = (routes_in_source(), routes_in_document());
        assert!(code.len() >= 15, "{code:?}");
        let undocumented: Vec<_> = code.difference(&doc).collect();
        let unserved: Vec<_> = doc.difference(&code).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "routes missing from docs/openapi.yaml: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/views/{view}/keys/{key}"]["get"].is_object());
    }
}
