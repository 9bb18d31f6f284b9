//! `GET /api/v1/stream`: the console's live updates as server-sent events, behind the API token
//! like every `/api/v1` route. Each stream sends `event: nodes` with the same JSON list as
//! `GET /api/v1/nodes` at once, then again on every online/offline transition and at least every
//! [`PERIOD`] (reports change the figures in between), never more often than [`MIN_SPACING`].
//!
//! Bounds: at most [`MAX_STREAMS`] streams at once (one beyond is a `503` with `{"error": …}`),
//! a keep-alive comment every [`KEEP_ALIVE`] so that proxies and the client see a live
//! connection, and each stream ends after [`MAX_LIFETIME`] (the client reconnects), so that no
//! stream holds its slot forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::state::{Controller, lock};

/// Streams served at once.
pub const MAX_STREAMS: usize = 32;
/// A comment line this often keeps an idle stream visibly alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The least time between two `nodes` events of a stream.
pub const MIN_SPACING: Duration = Duration::from_secs(1);
/// The most time between two `nodes` events of a stream.
pub const PERIOD: Duration = Duration::from_secs(3);
/// A stream ends after this long; the client opens another.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone)]
struct StreamState {
    controller: Arc<Controller>,
    slots: Arc<Semaphore>,
}

/// The route (authenticated by `admin::app`).
pub fn routes(controller: Arc<Controller>) -> Router {
    Router::new()
        .route("/api/v1/stream", get(stream))
        .with_state(StreamState {
            controller,
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
        })
}

/// One stream's state: its slot is given back when the stream is dropped.
struct Live {
    controller: Arc<Controller>,
    changes: watch::Receiver<u64>,
    _slot: OwnedSemaphorePermit,
    first: bool,
    ends: Instant,
}

fn nodes_event(controller: &Controller) -> Event {
    let nodes: Vec<crate::wire::NodeView> = lock(&controller.registry).nodes().cloned().collect();
    Event::default()
        .event("nodes")
        .json_data(&nodes)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

async fn stream(State(state): State<StreamState>) -> Response {
    let Ok(slot) = state.slots.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": format!("{MAX_STREAMS} live streams are open already; try again later")
            })),
        )
            .into_response();
    };
    let live = Live {
        changes: state.controller.watch_transitions(),
        controller: state.controller,
        _slot: slot,
        first: true,
        ends: Instant::now() + MAX_LIFETIME,
    };
    let events = futures_util::stream::unfold(live, |mut live| async move {
        if !live.first {
            tokio::time::sleep(MIN_SPACING).await;
            // A transition, or the period: whichever comes first (a closed channel is the period).
            let wait = PERIOD.saturating_sub(MIN_SPACING);
            if tokio::time::timeout(wait, live.changes.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                tokio::time::sleep(wait).await;
            }
        }
        if Instant::now() >= live.ends {
            return None;
        }
        live.first = false;
        let event = nodes_event(&live.controller);
        Some((Ok::<_, Infallible>(event), live))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Opens a stream over raw HTTP/1.1; the connection and what was read up to `until`.
    async fn open(addr: std::net::SocketAddr, until: &str) -> (tokio::net::TcpStream, String) {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(until) {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        (tcp, String::from_utf8_lossy(&seen).into_owned())
    }

    #[tokio::test]
    async fn streams_send_the_nodes_at_once_and_are_capped() {
        let controller = Controller::new(Registry::new());
        lock(&controller.registry).declare("n1", &[], 0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, routes(controller)).await });

        let (first, head) = open(addr, "\n\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(
            head.contains("event: nodes\ndata: [{\"name\":\"n1\""),
            "{head}"
        );
        let mut open_streams = vec![first];
        for _ in 1..MAX_STREAMS {
            open_streams.push(open(addr, "event: nodes").await.0);
        }
        // One beyond the cap is refused, not queued.
        let (_, refused) = open(addr, "}").await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.contains("live streams are open already"),
            "{refused}"
        );
        // A closed stream gives its slot back.
        drop(open_streams.pop());
        let reopened = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (tcp, head) = open(addr, "\r\n\r\n").await;
                if head.starts_with("HTTP/1.1 200") {
                    return tcp;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reopened.is_ok(), "the slot never came back");
    }

    #[tokio::test]
    async fn a_transition_is_sent_without_waiting_for_the_period() {
        let controller = Controller::new(Registry::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = controller.clone();
        tokio::spawn(async move { axum::serve(listener, routes(c)).await });
        let (mut tcp, head) = open(addr, "data: []\n\n").await;
        assert!(head.contains("event: nodes"), "{head}");
        lock(&controller.registry).declare("n2", &[], 0);
        let start = Instant::now();
        controller.transition();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains("\"n2\"") {
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
                .await
                .expect("the change within 10 s")
                .unwrap();
            assert!(n > 0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(start.elapsed() < PERIOD, "{:?}", start.elapsed());
    }
}
