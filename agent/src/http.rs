//! The metrics HTTP server: `/metrics` (text format 0.0.4, gzip when accepted), a landing page,
//! optional TLS and basic auth from `--web.config.file`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::exposition::{TEXT_004_CONTENT_TYPE, accepts_gzip};
use crate::scrape::Scraper;
use crate::webconfig::WebConfig;

/// A TLS client gets this long to finish its handshake, so that connections that never do
/// (a port scanner, a stalled peer) do not each hold a task and a descriptor for good.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct MetricsServer {
    pub scraper: Arc<Scraper>,
    pub telemetry_path: String,
    pub web: WebConfig,
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
    /// Serves connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        let acceptor = self.web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
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
            if !auth.check(header) {
                let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                return resp;
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
        // Inline on this runtime's one thread, on purpose (see main.rs): the collectors' file
        // reads are short, and a collector that panics fails this scrape, not the agent.
        let scraper = &self.scraper;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scraper.scrape(gzip))) {
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
            Err(_) => {
                tracing::error!("a collector panicked; scrape failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n")
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
}
