//! HTTP endpoints: `/metrics`, `/healthz`, `/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::Shared;

#[derive(Clone)]
pub struct App {
    pub registry: Arc<Registry>,
    pub shared: Arc<Shared>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app)
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Map reads are blocking syscalls: keep them off the async workers.
    let registry = app.registry.clone();
    let rendered =
        tokio::task::spawn_blocking(move || super::render(&registry, accept.as_deref())).await;
    match rendered {
        Ok(Ok((ct, body))) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

async fn healthz(State(app): State<App>) -> Response {
    let failed: Vec<_> = app
        .shared
        .statuses
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name)
        .collect();
    let up = app
        .shared
        .target
        .read()
        .map(|t| t.current.is_some())
        .unwrap_or(false);
    let body = format!(
        "ok\ntarget_up {}\nprobes_failed {}\n",
        u8::from(up),
        if failed.is_empty() {
            "none".to_string()
        } else {
            failed.join(",")
        }
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ebpf-sidecar</title></head><body>",
        "<h1>ebpf-sidecar ",
        env!("CARGO_PKG_VERSION"),
        "</h1><ul>",
        "<li><a href=\"/metrics\">/metrics</a> Prometheus metrics (text 0.0.4, or OpenMetrics by Accept)</li>",
        "<li><a href=\"/healthz\">/healthz</a> liveness and target state</li>",
        "</ul></body></html>"
    ))
}
