//! The web UI's files, built into the binary, and the headers every HTTP answer carries.
//!
//! The files are plain HTML, CSS and JavaScript in `assets/`: no build step, so what is in
//! the repository is what the browser runs. The page loads no inline script or style, so
//! its Content-Security-Policy can forbid both: a message that smuggles markup into the
//! page (it cannot: the script writes text with `textContent`) still could not run.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Headers every answer of the HTTP listener carries.
pub(super) fn common_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The page's policy: its own files only, no inline script or style, WebSocket to its own
/// host. `connect-src 'self'` covers ws: and wss: of the page's own origin in current
/// browsers; the host is named too for those that predate that rule.
fn content_security_policy(request_headers: &HeaderMap) -> HeaderValue {
    let host = request_headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let connect = match host {
        Some(host) => format!("'self' ws://{host} wss://{host}"),
        None => "'self'".to_string(),
    };
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// A file's entity tag: a hash of its bytes, so that a browser revalidates cheaply and an
/// upgraded server's files are never served stale from its cache.
fn entity_tag(content: &str) -> String {
    // FNV-1a: stable across builds and runs, unlike the standard library's hasher.
    let hash = content
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("\"{hash:016x}\"")
}

struct Asset {
    content: &'static str,
    content_type: &'static str,
    tag: String,
}

fn asset(which: usize) -> &'static Asset {
    static ASSETS: OnceLock<[Asset; 3]> = OnceLock::new();
    let assets = ASSETS.get_or_init(|| {
        let asset = |content: &'static str, content_type| Asset {
            content,
            content_type,
            tag: entity_tag(content),
        };
        [
            asset(INDEX_HTML, "text/html; charset=utf-8"),
            asset(APP_JS, "text/javascript; charset=utf-8"),
            asset(APP_CSS, "text/css; charset=utf-8"),
        ]
    });
    &assets[which]
}

/// A file with its type, tag and caching headers; `304 Not Modified` when the browser's
/// copy is current.
fn serve_asset(asset: &Asset, request: &Request) -> Response {
    let current = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|tag| tag.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == asset.tag));
    let mut response = if current {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Body::from(asset.content))
    };
    let headers = response.headers_mut();
    common_headers(headers);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidate on every load (cheap, with the tag): the files change with the server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(tag) = HeaderValue::from_str(&asset.tag) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        content_security_policy(request.headers()),
    );
    response
}

pub(super) async fn index(request: Request) -> Response {
    serve_asset(asset(0), &request)
}

pub(super) async fn script(request: Request) -> Response {
    serve_asset(asset(1), &request)
}

pub(super) async fn style(request: Request) -> Response {
    serve_asset(asset(2), &request)
}

pub(super) async fn not_found() -> Response {
    let mut response = (StatusCode::NOT_FOUND, "not found\n").into_response();
    common_headers(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_writes_no_markup_from_data() {
        // The policy forbids inline code: the page must not need any.
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        let handler = INDEX_HTML.split(" on").skip(1).find(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert_eq!(handler, None, "an inline event handler");
        for script in INDEX_HTML.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("src="), "an inline script");
        }
        // Text goes in as text: no HTML parsing of anything the script builds.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("chat.example:8080"));
        let policy = content_security_policy(&headers);
        let policy = policy.to_str().unwrap();
        assert!(
            policy.contains("connect-src 'self' ws://chat.example:8080 wss://chat.example:8080")
        );
        assert!(policy.contains("script-src 'self';"));
        headers.insert(header::HOST, HeaderValue::from_static("evil; script-src *"));
        let policy = content_security_policy(&headers);
        assert!(policy.to_str().unwrap().contains("connect-src 'self';"));
    }
}
