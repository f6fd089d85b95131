//! What a request must show before any route sees it, so that ohd can only be driven by its own
//! user and not by a web page they happen to visit:
//!
//! - a `Host` that names this server: a page on a name the attacker controls, re-pointed at
//!   127.0.0.1 (DNS rebinding), is the browser's same origin for that name, so only the Host
//!   header tells it apart ([`host_allowed`]);
//! - for a change or a socket, no `Origin` or an allowed one: browsers send `Origin` on
//!   cross-site POSTs and websockets but let a page send some without asking first
//!   ([`origin_allowed`]);
//! - for a change under `/api`, a body in the type the route reads: a cross-site `text/plain`
//!   POST needs no CORS preflight, and must not be parsed as JSON ([`body_type_allowed`]).

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;

/// The middleware: the three checks, in that order, on every request.
pub async fn check(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = &state.config;
    let path = request.uri().path();
    let headers = request.headers();
    // Health probes (load balancers, orchestrators) name the server however they reach it, and
    // these two answer nothing private and change nothing.
    if !matches!(path, "/alive" | "/health") {
        let host = request_host(&request);
        if host.is_some_and(|h| !host_allowed(h, config.host, &config.allowed_hosts)) {
            return Err(ApiError::bad_request(
                "HOST_NOT_ALLOWED",
                "this server does not answer to that host name; add it to server.allowed_hosts (--allowed-hosts)",
            ));
        }
    }
    let changes = changes_something(request.method());
    if (changes || path.starts_with("/socket.io"))
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !origin_allowed(origin, host, &config.cors_allowed_origins) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ORIGIN_NOT_ALLOWED",
                "requests from this origin are refused; add it to server.cors_allowed_origins",
            ));
        }
    }
    if changes && path.starts_with("/api/") {
        body_type_allowed(path, headers)?;
    }
    Ok(next.run(request).await)
}

/// The name the client used for this server: the `Host` header (HTTP/1.1), or the request
/// target's authority. A request with neither comes from no browser, and is let through.
fn request_host(request: &Request) -> Option<&str> {
    match request.headers().get(header::HOST) {
        Some(value) => Some(value.to_str().unwrap_or("\u{0}")),
        None => request.uri().authority().map(|a| a.as_str()),
    }
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a `Host` (with or without a port) names this server: a loopback address,
/// `localhost` or a name under `.localhost` (browsers resolve those to loopback themselves, so
/// they cannot be re-pointed by DNS), the address ohd is bound to when that is a specific one,
/// or a name in `allowed_hosts`.
pub fn host_allowed(host: &str, bound: IpAddr, allowed: &[String]) -> bool {
    let name = normalize(strip_port(host));
    if name.is_empty() {
        return false;
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        if ip.is_loopback() || (!bound.is_unspecified() && ip == bound.to_canonical()) {
            return true;
        }
    }
    allowed
        .iter()
        .any(|a| !a.is_empty() && normalize(a) == name)
}

/// `example.org:3000` → `example.org`, `[::1]:3000` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address, no port.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// Lower case, without brackets around an IPv6 address or a final dot.
fn normalize(name: &str) -> String {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Same origin as `host`, a page on localhost, or one of the configured origins (`*` allows
/// all).
pub fn origin_allowed(origin: &HeaderValue, host: Option<&str>, extra: &[String]) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if extra
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/') == origin)
    {
        return true;
    }
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(authority)) {
        return true;
    }
    let hostname = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    matches!(hostname, "localhost" | "127.0.0.1" | "::1")
}

/// A change under `/api` carries JSON (`multipart/form-data` for `upload-files`), or no body
/// and no type at all, as the web UI sends `start`, `stop` and `DELETE`.
fn body_type_allowed(path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = if path.ends_with("/upload-files") {
        "multipart/form-data"
    } else {
        "application/json"
    };
    let refuse = |what: &str| {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("{what}: send Content-Type: {expected}"),
        ))
    };
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            let essence = value
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .map(str::trim)
                .unwrap_or("");
            if essence.eq_ignore_ascii_case(expected) {
                Ok(())
            } else {
                refuse("this request body's type is not accepted")
            }
        }
        None if has_body(headers) => refuse("a request body needs a type"),
        None => Ok(()),
    }
}

fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_from_localhost_the_same_host_or_the_list_are_allowed() {
        let o = |s: &'static str| HeaderValue::from_static(s);
        let extra = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(&o("http://localhost:3001"), None, &[]));
        assert!(origin_allowed(&o("http://127.0.0.1:5173"), None, &[]));
        assert!(origin_allowed(&o("http://[::1]:80"), None, &[]));
        assert!(origin_allowed(
            &o("https://ohd.example.org"),
            Some("ohd.example.org"),
            &[]
        ));
        assert!(origin_allowed(&o("https://app.example.com"), None, &extra));
        assert!(!origin_allowed(
            &o("https://evil.example"),
            Some("ohd.example.org"),
            &extra
        ));
        assert!(!origin_allowed(
            &o("http://localhost.evil.example"),
            None,
            &[]
        ));
        assert!(!origin_allowed(&o("null"), None, &[]));
    }

    #[test]
    fn hosts_on_loopback_the_bound_address_or_the_list_are_allowed() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let any = IpAddr::from([0, 0, 0, 0]);
        let list = vec!["ohd.lan".to_owned(), "[fd00::5]".to_owned()];
        for ok in [
            "localhost",
            "localhost:3000",
            "LOCALHOST.:3000",
            "app.localhost:80",
            "127.0.0.1:3000",
            "127.1.2.3",
            "[::1]:3000",
            "[::ffff:127.0.0.1]:3000",
            "::1",
            "ohd.lan:3000",
            "OHD.lan",
            "[fd00::5]:1",
        ] {
            assert!(host_allowed(ok, any, &list), "{ok} refused");
        }
        for bad in [
            "",
            ":3000",
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.5:3000",
            "0.0.0.0:3000",
            "[fd00::6]",
            "ohd.lan.evil.example",
        ] {
            assert!(!host_allowed(bad, any, &list), "{bad} allowed");
        }
        let bound = IpAddr::from([192, 168, 1, 20]);
        assert!(host_allowed("192.168.1.20:3000", bound, &[]));
        assert!(!host_allowed("192.168.1.21:3000", bound, &[]));
        assert!(!host_allowed("192.168.1.20", loopback, &[]));
    }

    #[test]
    fn changes_need_json_or_no_body_at_all() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(body_type_allowed("/api/conversations", &json).is_ok());
        assert!(body_type_allowed("/api/conversations/x/stop", &headers(&[])).is_ok());
        let empty = headers(&[("content-length", "0")]);
        assert!(body_type_allowed("/api/conversations/x/stop", &empty).is_ok());
        for refused in [
            headers(&[("content-type", "text/plain;charset=UTF-8")]),
            headers(&[("content-type", "application/x-www-form-urlencoded")]),
            headers(&[("content-type", "multipart/form-data; boundary=x")]),
            headers(&[("content-length", "7")]),
            headers(&[("transfer-encoding", "chunked")]),
        ] {
            let err = body_type_allowed("/api/settings", &refused).unwrap_err();
            assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let multipart = headers(&[("content-type", "multipart/form-data; boundary=x")]);
        assert!(body_type_allowed("/api/conversations/x/upload-files", &multipart).is_ok());
        assert!(body_type_allowed("/api/conversations/x/upload-files", &json).is_err());
    }
}
