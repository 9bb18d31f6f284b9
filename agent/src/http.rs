//! The metrics HTTP server: `/metrics` (text format 0.0.4, gzip when accepted), a landing page,
//! optional TLS and basic auth from `--web.config.file`; the limits that keep it answering
//! (docs/agent.md, "HTTP limits"): a connection cap, a header-read (and keep-alive idle) timeout,
//! `--web.max-requests` concurrent scrapes, bcrypt off the runtime thread (`webconfig.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::exposition::{TEXT_004_CONTENT_TYPE, accepts_gzip};
use crate::scrape::Scraper;
use crate::webconfig::{Verdict, WebConfig};

/// A TLS client gets this long to finish its handshake, so that connections that never do
/// (a port scanner, a stalled peer) do not each hold a task and a descriptor for good.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send a request's headers, the keep-alive wait before them
/// included (hyper runs one timer for both): longer than common scrape intervals (15–60 s), so
/// that Prometheus keeps its connection between scrapes. A client that trickles its headers (or
/// sends none) is disconnected after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections served at once. One beyond it is answered `503 Service Unavailable` and closed
/// without its request being read (over TLS: closed), so that a flood of connections costs a
/// bounded number of descriptors and tasks.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections beyond [`MAX_CONNECTIONS`] being answered 503 at once; past that they are closed
/// on accept.
const MAX_REFUSING: usize = 64;
/// How long a refused connection may take to close its side after the 503 (its request is read
/// and discarded meanwhile, so that closing does not reset the connection before the client has
/// read the answer).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// `NODEWARDEN_HTTP_HEADER_TIMEOUT_MS` overrides [`HEADER_READ_TIMEOUT`] (tests, or a host that
/// wants idle connections dropped sooner).
pub const HEADER_TIMEOUT_ENV: &str = "NODEWARDEN_HTTP_HEADER_TIMEOUT_MS";

const BUSY_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 33\r\nConnection: close\r\n\r\ntoo many connections, try again\r\n";

/// The limits of one server.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// `--web.max-requests`: scrapes in flight at once, beyond which a scrape is answered 503
    /// (promhttp's `MaxRequestsInFlight`); 0 for no limit.
    pub max_requests: usize,
}

impl Limits {
    /// The defaults, with `--web.max-requests` and the environment's header-timeout override.
    pub fn new(max_requests: usize) -> Limits {
        Limits {
            header_read_timeout: header_timeout_from_env(),
            max_connections: MAX_CONNECTIONS,
            max_requests,
        }
    }
}

/// [`HEADER_READ_TIMEOUT`], or [`HEADER_TIMEOUT_ENV`]'s milliseconds when it is set to a positive
/// number (anything else is logged and ignored).
pub fn header_timeout_from_env() -> Duration {
    match std::env::var(HEADER_TIMEOUT_ENV) {
        Err(_) => HEADER_READ_TIMEOUT,
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                tracing::warn!(%value, "{HEADER_TIMEOUT_ENV} is not a positive number of milliseconds; ignored");
                HEADER_READ_TIMEOUT
            }
        },
    }
}

pub struct MetricsServer {
    scraper: Arc<Scraper>,
    telemetry_path: String,
    pub web: WebConfig,
    limits: Limits,
    /// Scrapes in flight (`None`: `--web.max-requests=0`).
    in_flight: Option<Arc<Semaphore>>,
    /// One scrape on the blocking pool at a time: the collectors keep their buffers, and a
    /// scrape stuck on a source must not take the thread bcrypt needs as well.
    scrape_turn: Arc<tokio::sync::Mutex<()>>,
}

/// node_exporter's `:9100` means every address; Rust wants a host.
pub fn parse_listen_address(address: &str) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port in {address:?}"))?;
        return Ok(vec![
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 0], port)),
            SocketAddr::from(([0, 0, 0, 0], port)),
        ]);
    }
    address
        .to_socket_addrs()
        .map(|addrs| addrs.collect())
        .map_err(|e| format!("{address:?}: {e}"))
}

/// Binds the first candidate that works (`[::]` falls back to `0.0.0.0` on hosts without IPv6).
pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    let candidates = parse_listen_address(address).map_err(anyhow::Error::msg)?;
    let mut last_error = None;
    for addr in candidates {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(anyhow::anyhow!("binding {addr}: {e}")),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{address:?} resolves to no address")))
}

impl MetricsServer {
    pub fn new(
        scraper: Arc<Scraper>,
        telemetry_path: String,
        web: WebConfig,
        limits: Limits,
    ) -> MetricsServer {
        let in_flight =
            (limits.max_requests > 0).then(|| Arc::new(Semaphore::new(limits.max_requests)));
        MetricsServer {
            scraper,
            telemetry_path,
            web,
            limits,
            in_flight,
            scrape_turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Serves connections until the listener fails: one task per connection up to
    /// [`Limits::max_connections`], each connection's headers bounded by
    /// [`Limits::header_read_timeout`].
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let acceptor = self.web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let mut last_warning: Option<Instant> = None;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        limit = self.limits.max_connections,
                        "connection limit reached: refusing new connections (503) until some close"
                    );
                }
                refuse(stream, acceptor.is_none(), &refusing);
                continue;
            };
            let server = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let header_read_timeout = server.limits.header_read_timeout;
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout);
                let result = match acceptor {
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => {
                                builder.serve_connection(TokioIo::new(tls), service).await
                            }
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%peer, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Some(auth) = &self.web.basic_auth {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok());
            match auth.check(header).await {
                Verdict::Allowed => {}
                Verdict::Denied => {
                    let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                    return resp;
                }
                Verdict::Busy => {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many authentication attempts in progress, try again later\n",
                    );
                }
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        if req.uri().path() == self.telemetry_path {
            return self.metrics(&req).await;
        }
        if req.uri().path() == "/" {
            let page = format!(
                "<html><head><title>nodewarden agent</title></head><body><h1>nodewarden agent</h1>\
                 <p><a href=\"{0}\">Metrics</a></p></body></html>\n",
                self.telemetry_path
            );
            let mut resp = Response::new(Full::new(Bytes::from(page)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return resp;
        }
        text(StatusCode::NOT_FOUND, "404 page not found\n")
    }

    async fn metrics(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let gzip = req
            .headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(accepts_gzip);
        // promhttp's MaxRequestsInFlight: beyond the limit, 503 at once rather than a queue.
        let _in_flight: Option<OwnedSemaphorePermit> = match &self.in_flight {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return text_owned(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "Limit of concurrent requests reached ({}), try again later.\n",
                            self.limits.max_requests
                        ),
                    );
                }
            },
            None => None,
        };
        // On the blocking pool, one at a time: a scrape stuck on a source (a FIFO in the textfile
        // directory, a hung read) holds its request and one thread, not the server. The turn goes
        // with the scrape, so it is held until the scrape really ends even if its client leaves.
        let turn = self.scrape_turn.clone().lock_owned().await;
        let scraper = self.scraper.clone();
        let scraped = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            scraper.scrape(gzip)
        })
        .await;
        match scraped {
            Ok(Ok(rendered)) => {
                let mut resp = Response::new(Full::new(rendered.body));
                let headers = resp.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(TEXT_004_CONTENT_TYPE),
                );
                if rendered.gzipped {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
                resp
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "scrape failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
            }
            Err(e) => {
                tracing::error!(error = %e, "a collector panicked; scrape failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
            }
        }
    }
}

/// Answers a connection beyond the cap: `503` and close (over TLS: close), on a task of its own
/// while fewer than [`MAX_REFUSING`] are being answered, else closed on the spot.
fn refuse(stream: TcpStream, plain: bool, refusing: &Arc<Semaphore>) {
    if !plain {
        return;
    }
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(BUSY_RESPONSE).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text_owned(status, body)
}

fn text_owned(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":9100").unwrap().len(), 2);
        assert_eq!(
            parse_listen_address("127.0.0.1:9200").unwrap(),
            vec!["127.0.0.1:9200".parse().unwrap()]
        );
        assert!(parse_listen_address(":x").is_err());
    }

    #[test]
    fn the_busy_answer_says_its_length() {
        let text = std::str::from_utf8(BUSY_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }
}
