//! The web pages ohd serves beside the API.
//!
//! Without `--web-ui`, ohd's own small page (`index.html`, `app.js`, `style.css` in this folder,
//! compiled into the binary, so `cargo run` alone serves it). With `--web-ui DIR`, a built
//! OpenHands frontend from `DIR` instead, with the single-page-app fallback: any GET that is not
//! a file in `DIR` gets `DIR/index.html`, so `/conversations/<id>` opens in the browser.
//!
//! Either way `/api/*` paths with no route get the JSON 404 of the API, never a page, and
//! `/socket.io/*` never reaches this module (the Engine.IO layer answers it first).

use crate::api;
use crate::app::AppState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use tower::Service;
use tower_http::services::{ServeDir, ServeFile};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The page loads nothing but its own script and stylesheet and talks only to this origin
/// (`'self'` covers the same-origin `ws:`/`wss:` socket), so anything injected into it has
/// nowhere to load from or send to.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The routes of the web page, and the fallback for every path no other route answers.
pub fn routes(web_ui: Option<&Path>) -> Router<AppState> {
    match web_ui {
        None => Router::new()
            .route(
                "/",
                get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
            )
            .route(
                "/assets/ohd/app.js",
                get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
            )
            .route(
                "/assets/ohd/style.css",
                get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }),
            )
            .fallback(api::not_found),
        Some(dir) => {
            let frontend = Frontend::new(dir);
            Router::new().fallback(move |request: Request| {
                let frontend = frontend.clone();
                async move { frontend.serve(request).await }
            })
        }
    }
}

/// Refuses a `--web-ui` folder that is not a built frontend, before the server starts.
pub fn check_web_ui(dir: &Path) -> anyhow::Result<()> {
    let index = dir.join("index.html");
    if index.is_file() {
        return Ok(());
    }
    anyhow::bail!(
        "--web-ui {}: no index.html there. Give the folder of a built frontend, for example \
         OpenHands/frontend/build after `npm run build` (see the README), or leave --web-ui \
         out to use ohd's own page",
        dir.display()
    )
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files that change with the binary: always revalidate rather than run an old script
    // against a newer server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// A built single-page frontend in a folder.
#[derive(Clone)]
struct Frontend {
    /// Files, and `index.html` for any other path (the app's own routes).
    app: ServeDir<ServeFile>,
    /// Files only: a missing `/assets/chunk-1234.js` is a 404, not HTML the browser would try
    /// to run as a script.
    files: ServeDir,
}

impl Frontend {
    fn new(dir: &Path) -> Frontend {
        let index: PathBuf = dir.join("index.html");
        Frontend {
            app: ServeDir::new(dir).fallback(ServeFile::new(index)),
            files: ServeDir::new(dir),
        }
    }

    async fn serve(self, request: Request) -> Response {
        let path = request.uri().path();
        if is_api_path(path) {
            return api::not_found(request.uri().clone()).await.into_response();
        }
        if names_a_file(path) {
            call(self.files, request).await
        } else {
            call(self.app, request).await
        }
    }
}

/// One request through a file service, which answers everything itself (404, 500, ranges).
async fn call<S>(mut service: S, request: Request) -> Response
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    let Ok(()) = std::future::poll_fn(|cx| service.poll_ready(cx)).await;
    let Ok(response) = service.call(request).await;
    response.into_response()
}

/// Paths that belong to the server, not to the frontend's router.
fn is_api_path(path: &str) -> bool {
    ["/api", "/socket.io"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// Whether the last segment looks like a file name (`app.js`, `translation.json`).
fn names_a_file(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|last| {
        last.rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_never_the_frontend_s() {
        assert!(is_api_path("/api"));
        assert!(is_api_path("/api/nothing"));
        assert!(is_api_path("/socket.io/"));
        assert!(!is_api_path("/apis"));
        assert!(!is_api_path("/conversations/abc"));
        assert!(!is_api_path("/"));
    }

    #[test]
    fn file_names_are_told_from_app_routes() {
        assert!(names_a_file("/assets/index-4f2a.js"));
        assert!(names_a_file("/locales/en/translation.json"));
        assert!(!names_a_file(
            "/conversations/4e86846ac2404ca59e26f477e18c9eef"
        ));
        assert!(!names_a_file("/settings"));
        assert!(!names_a_file("/"));
        assert!(!names_a_file("/.well-known/"));
    }

    #[test]
    fn a_folder_without_index_html_is_refused() {
        let dir = std::env::temp_dir().join(format!("ohd-web-ui-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let error = check_web_ui(&dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("no index.html"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
