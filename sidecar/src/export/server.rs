//! HTTP endpoints: `/metrics`, `/healthz`, `/` and its assets; `/events` and the families'
//! own routes are merged in.

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

/// The routes; with `auth`, every one of them requires basic auth.
pub fn router(app: App, auth: Option<super::web::BasicAuth>) -> Router {
    let r = routes(app);
    match auth {
        Some(a) => r.layer(axum::middleware::from_fn_with_state(
            a,
            super::web::require_basic_auth,
        )),
        None => r,
    }
}

/// Serve `router` over TLS: a plain-HTTP client gets a failed handshake and a closed connection.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<()> {
    loop {
        let (tcp, peer) = listener.accept().await?;
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

/// The exporter's own routes, the event stream, and every loaded family's routes. A path of a
/// family that is not loaded answers 404 with the flag that would serve it.
fn routes(app: App) -> Router {
    let shared = app.shared.clone();
    let mut r = Router::new()
        .route("/", get(index))
        .route("/assets/live.js", get(live_js))
        .route("/assets/live.css", get(live_css))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app)
        .merge(crate::events::router(shared.events.clone()));
    for p in &shared.probes {
        if let Some(family_routes) = p.clone().routes() {
            r = r.merge(family_routes);
        }
    }
    for f in crate::probes::registry::FAMILIES {
        if shared.probes.iter().any(|p| p.name() == f.name) {
            continue;
        }
        for (path, absent) in f.routes {
            r = r.route(
                path,
                get(move || async move { (StatusCode::NOT_FOUND, *absent) }),
            );
        }
    }
    r
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
