//! `GET /metrics`: ohd's figures in the OpenMetrics text format, for Prometheus. On the API's
//! address it needs the session key like the API; `[server] metrics_addr` serves it alone on
//! another address (for a scraper on a private network), without one.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, ohd_metrics::CONTENT_TYPE)],
        ohd_metrics::metrics().encode(),
    )
}
