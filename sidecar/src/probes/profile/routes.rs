//! The profiler's HTTP routes: folded stacks, a flame graph, and pprof.

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{MAX_SECONDS, Store, folded_text};

pub const ROUTES: &[(&str, &str)] = &[
    ("/debug/profile/folded", OFF),
    ("/debug/flamegraph.svg", OFF),
    ("/debug/pprof/profile", OFF),
];

const OFF: &str = "the profiler is off (--no-profile, or profile not in --probes)\n";

#[derive(serde::Deserialize)]
pub struct ProfileQuery {
    seconds: Option<u64>,
}

pub fn router(store: Arc<Store>) -> Router {
    let (s1, s2, s3) = (store.clone(), store.clone(), store);
    Router::new()
        .route("/debug/profile/folded", get(move |q| folded(s1.clone(), q)))
        .route("/debug/flamegraph.svg", get(move |q| svg(s2.clone(), q)))
        .route("/debug/pprof/profile", get(move |q| pprof(s3.clone(), q)))
}

/// Samples of the next `seconds` (default 10), shared with any concurrent request.
async fn collect(
    store: Arc<Store>,
    q: &ProfileQuery,
) -> Result<(Vec<(Vec<String>, u64)>, u64, u64), Response> {
    let seconds = q.seconds.unwrap_or(10);
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err((StatusCode::BAD_REQUEST, "seconds must be 1..=300\n").into_response());
    }
    let hz = store.hz;
    let stacks = tokio::task::spawn_blocking(move || store.collect(seconds))
        .await
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "profiler failed\n").into_response())?;
    Ok((stacks, hz, seconds))
}

async fn folded(store: Arc<Store>, Query(q): Query<ProfileQuery>) -> Response {
    match collect(store, &q).await {
        Ok((stacks, _, _)) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            folded_text(&stacks),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn svg(store: Arc<Store>, Query(q): Query<ProfileQuery>) -> Response {
    let (stacks, _, seconds) = match collect(store, &q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let text = folded_text(&stacks);
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

async fn pprof(store: Arc<Store>, Query(q): Query<ProfileQuery>) -> Response {
    let (stacks, hz, seconds) = match collect(store, &q).await {
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
