//! The event stream: families that emit events (ring buffers) hand each one, as a JSON line, to
//! an [`EventSink`], which fans them out to `GET /events` subscribers and `--events-out`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Lines kept for a slow `/events` reader before it starts missing some (it is told how many).
const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Clone)]
pub struct EventSink {
    tx: broadcast::Sender<Arc<str>>,
    file: Option<Arc<Mutex<BufWriter<File>>>>,
}

impl EventSink {
    pub fn new(events_out: Option<&Path>) -> std::io::Result<Self> {
        let file = match events_out {
            Some(p) => Some(Arc::new(Mutex::new(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )))),
            None => None,
        };
        Ok(Self {
            tx: broadcast::channel(SUBSCRIBER_BUFFER).0,
            file,
        })
    }

    /// Publish a batch of JSON lines (without newlines).
    pub fn publish(&self, lines: &[String]) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            for l in lines {
                let _ = writeln!(f, "{l}");
            }
            let _ = f.flush();
        }
        for l in lines {
            // No subscriber is not an error: the event still went to the file, if any.
            let _ = self.tx.send(Arc::from(l.as_str()));
        }
    }

    /// Whether anyone takes events now (a file, or an open `/events`): readers skip formatting
    /// when not.
    pub fn wanted(&self) -> bool {
        self.file.is_some() || self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns: turns kernel (monotonic) timestamps into wall time.
pub fn realtime_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Wall-clock time of a CLOCK_MONOTONIC timestamp, as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_from_monotonic(mono_ns: u64) -> String {
    let wall = realtime_offset_ns() + mono_ns as i128;
    rfc3339(wall)
}

pub fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// GET /events: every event as it happens, one JSON object per line (`?kind=a,b` keeps only
/// those kinds), until the client goes away.
pub fn router(sink: EventSink) -> axum::Router {
    axum::Router::new().route(
        "/events",
        axum::routing::get(move |q| stream(sink.clone(), q)),
    )
}

#[derive(serde::Deserialize)]
pub struct EventsQuery {
    /// Comma-separated kinds to keep (all when absent).
    pub kind: Option<String>,
}

/// Events as they happen, one JSON object per line, until the client goes away.
pub async fn stream(
    sink: EventSink,
    axum::extract::Query(q): axum::extract::Query<EventsQuery>,
) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let kinds: Option<Vec<String>> = q.kind.map(|k| {
        k.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let rx = sink.subscribe();
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

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            super::rfc3339(1_795_000_000_123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
