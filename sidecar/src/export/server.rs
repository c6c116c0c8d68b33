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
        .route("/assets/live.js", get(live_js))
        .route("/assets/live.css", get(live_css))
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

// The live page: static files compiled into the binary, so it works offline and needs no CDN.
// The browser polls /metrics and draws from it; the server does no extra work for the page.
async fn index() -> Html<&'static str> {
    Html(include_str!("../../assets/index.html"))
}

async fn live_js() -> Response {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/live.js"),
    )
}

async fn live_css() -> Response {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/live.css"),
    )
}

fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
