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

fn routes(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/live.js", get(live_js))
        .route("/assets/live.css", get(live_css))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/seccomp", get(seccomp))
        .route("/events", get(events))
        .route("/debug/profile/folded", get(profile_folded))
        .route("/debug/flamegraph.svg", get(profile_svg))
        .route("/debug/pprof/profile", get(profile_pprof))
        .route("/debug/pcap", get(pcap))
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

#[derive(serde::Deserialize)]
struct SeccompQuery {
    /// Leave out the container runtime's baseline (only for processes started outside runc).
    baseline: Option<bool>,
}

/// The seccomp profile advised from what the target did so far.
async fn seccomp(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<SeccompQuery>,
) -> Response {
    let shared = app.shared.clone();
    let observed = tokio::task::spawn_blocking(move || {
        shared.probes.iter().find_map(|p| p.observed_syscalls())
    })
    .await;
    match observed {
        Ok(Some(nrs)) => {
            let body = crate::seccomp::profile(&nrs, q.baseline.unwrap_or(true));
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{body:#}\n"),
            )
                .into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            "the seccomp advisor needs the syscalls probe family (--probes ...,syscalls)\n",
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    /// Comma-separated kinds to keep (all when absent).
    kind: Option<String>,
}

/// Events as they happen, one JSON object per line, until the client goes away.
async fn events(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> Response {
    let kinds: Option<Vec<String>> = q.kind.map(|k| {
        k.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let rx = app.shared.events.subscribe();
    let keep = |kinds: &Option<Vec<String>>, line: &str| {
        kinds.as_ref().is_none_or(|ks| {
            ks.iter()
                .any(|k| line.contains(&format!("\"kind\":\"{k}\"")))
        })
    };
    let stream = futures_util::stream::unfold((rx, kinds), move |(mut rx, kinds)| async move {
        let mut chunk = String::new();
        loop {
            // Wait for one line, then take whatever else is already there: events arrive in
            // batches, and one write per batch costs far less than one per line.
            let next = if chunk.is_empty() {
                rx.recv().await
            } else {
                match rx.try_recv() {
                    Ok(l) => Ok(l),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n))
                    }
                    Err(_) => break,
                }
            };
            match next {
                Ok(line) => {
                    if keep(&kinds, &line) {
                        chunk.push_str(&line);
                        chunk.push('\n');
                    }
                    if chunk.len() >= 256 * 1024 {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    chunk.push_str(&format!("{{\"kind\":\"lagged\",\"missed\":{n}}}\n"));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) if chunk.is_empty() => {
                    return None;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        Some((
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)),
            (rx, kinds),
        ))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ProfileQuery {
    seconds: Option<u64>,
}

/// Samples of the next `seconds` (default 10), shared with any concurrent request.
async fn collect_profile(
    app: &App,
    q: &ProfileQuery,
) -> Result<(Vec<(Vec<String>, u64)>, u64, u64), Response> {
    let Some(store) = app.shared.probes.iter().find_map(|p| p.profile_store()) else {
        return Err((
            StatusCode::NOT_FOUND,
            "the profiler is off (--no-profile, or profile not in --probes)\n",
        )
            .into_response());
    };
    let seconds = q.seconds.unwrap_or(10);
    if seconds == 0 || seconds > crate::probes::profile::MAX_SECONDS {
        return Err((StatusCode::BAD_REQUEST, "seconds must be 1..=300\n").into_response());
    }
    let hz = store.hz;
    let stacks = tokio::task::spawn_blocking(move || store.collect(seconds))
        .await
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "profiler failed\n").into_response())?;
    Ok((stacks, hz, seconds))
}

async fn profile_folded(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<ProfileQuery>,
) -> Response {
    match collect_profile(&app, &q).await {
        Ok((stacks, _, _)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::probes::profile::folded_text(&stacks),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn profile_svg(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<ProfileQuery>,
) -> Response {
    let (stacks, _, seconds) = match collect_profile(&app, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let text = crate::probes::profile::folded_text(&stacks);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!("ebpf-sidecar: {seconds} s of CPU samples");
    opts.count_name = "samples".into();
    let mut svg = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return (StatusCode::OK, [(header::CONTENT_TYPE, "image/svg+xml")], "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">no samples: the target did not run on a CPU</text></svg>\n").into_response();
    }
    match inferno::flamegraph::from_lines(&mut opts, lines, &mut svg) {
        Ok(()) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("flame graph: {e}\n"),
        )
            .into_response(),
    }
}

async fn profile_pprof(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<ProfileQuery>,
) -> Response {
    let (stacks, hz, seconds) = match collect_profile(&app, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let body = super::pprof::encode(
        &stacks,
        1_000_000_000 / hz.max(1),
        seconds * 1_000_000_000,
        now - seconds * 1_000_000_000,
    );
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
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

#[derive(serde::Deserialize)]
struct PcapQuery {
    seconds: Option<u64>,
    snaplen: Option<u32>,
}

/// The target's packets for `seconds` (default 10) as a pcap file, streamed as they come.
async fn pcap(
    State(app): State<App>,
    axum::extract::Query(q): axum::extract::Query<PcapQuery>,
) -> Response {
    use crate::probes::net_pkt::{self, PcapError, PcapRequest};
    let found = app
        .shared
        .probes
        .iter()
        .find_map(|p| p.pcap().map(|c| (c, p.clone())));
    let Some((capture, probe)) = found else {
        return (
            StatusCode::NOT_FOUND,
            "packet capture needs the net probe family (--probes ...,net)\n",
        )
            .into_response();
    };
    let req = PcapRequest {
        seconds: q.seconds.unwrap_or(10),
        snaplen: q.snaplen.unwrap_or(net_pkt::PCAP_DEFAULT_SNAPLEN),
        max_bytes: net_pkt::PCAP_MAX_BYTES,
    };
    match capture.start(probe, req) {
        Ok(rx) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| {
                    (
                        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)),
                        rx,
                    )
                })
            });
            (
                [
                    (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"ebpf-sidecar.pcap\"",
                    ),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Err(e) => {
            let code = match e {
                PcapError::NotAllowed => StatusCode::FORBIDDEN,
                PcapError::Busy => StatusCode::CONFLICT,
                PcapError::BadRequest(_) => StatusCode::BAD_REQUEST,
                PcapError::Kernel(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}
