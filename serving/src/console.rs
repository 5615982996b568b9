//! The web console: `GET /` and `GET /console.js`, one page and its
//! script, embedded in the binary (no build step, nothing fetched from
//! elsewhere at run time). The page reads the REST API like any client:
//! read-only, and a batch run it requests needs the token when auth is on.
//! See docs/console.md.

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");

/// Scripts from this server only (`/console.js`), requests to this server
/// only, no frames, no plugins. Inline styles stay allowed (the progress
/// bar's width).
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                      style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    h.insert("content-security-policy", HeaderValue::from_static(POLICY));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

/// `GET /`: the page.
pub fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /console.js`: its script.
pub fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_sets_text_safely() {
        assert!(PAGE.contains("<script src=\"/console.js\"></script>"));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        // Server text goes through textContent / text nodes, never HTML.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
        let r = page();
        assert_eq!(
            r.headers()["content-security-policy"],
            HeaderValue::from_static(POLICY)
        );
    }
}
