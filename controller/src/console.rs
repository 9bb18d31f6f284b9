//! The web console: one page, one script and one stylesheet (`controller/console/`, plain
//! JavaScript, no build step), plus the vendored chart library uPlot 1.6.32 (MIT,
//! `controller/console/uplot.*`, its licence in `uplot.LICENSE`), embedded in the binary and
//! served under `/console/` by the controller's HTTP server; `/` redirects there.
//!
//! The files hold no data and are served without authentication. The page asks the operator for
//! the API token and talks only to the authenticated `/api/v1` API with it, as a bearer token
//! kept in the tab's `sessionStorage`: no cookie (so no cross-site request can borrow it) and
//! nothing server-side. Every response carries a strict Content-Security-Policy (scripts, styles
//! and connections from this origin only; no inline script; no form submission; no framing),
//! `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.
//! `Cache-Control: no-cache` with an `ETag` makes browsers revalidate, so an upgraded controller's
//! files are picked up at once and unchanged ones cost a `304`.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy of every console response. `form-action 'none'`: were the script ever not to run,
/// the login form still could not send the token anywhere (not even into a URL).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: path under `/console/`, content type, content.
pub const FILES: [(&str, &str, &str); 5] = [
    (
        "",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/uplot.iife.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_str!("../console/uplot.min.css"),
    ),
];

struct Asset {
    content_type: &'static str,
    body: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new((_, content_type, body): (&str, &'static str, &'static str)) -> Asset {
        let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
        let hex: String = digest.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Asset {
            content_type,
            body,
            etag: HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }
}

static ASSETS: LazyLock<[Asset; 5]> = LazyLock::new(|| FILES.map(Asset::new));

/// The console's routes (unauthenticated).
pub fn router() -> Router {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/index.html",
            get(|h: HeaderMap| async move { serve(0, &h) }),
        );
    for (index, (path, _, _)) in FILES.iter().enumerate() {
        router = router.route(
            &format!("/console/{path}"),
            get(move |h: HeaderMap| async move { serve(index, &h) }),
        );
    }
    router
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(etag) = etag.to_str().ok() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let mut response = if not_modified(request, &asset.etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attribute names of `html`'s tags (lower-cased), for the CSP checks.
    fn attributes(html: &str) -> Vec<String> {
        let mut names = Vec::new();
        for tag in html.split('<').skip(1) {
            let tag = tag.split('>').next().unwrap_or("");
            for word in tag.split_whitespace().skip(1) {
                let name = word.split('=').next().unwrap_or("").to_ascii_lowercase();
                names.push(name);
            }
        }
        names
    }

    #[test]
    fn the_page_runs_under_its_policy_and_never_renders_data_as_html() {
        let html = FILES[0].2;
        // Every script is a file of this origin: nothing inline for the CSP to refuse.
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(
                tag.contains("src=\"console.js\"") || tag.contains("src=\"uplot.js\""),
                "inline script: {tag}"
            );
            assert!(
                script[tag.len() + 1..].starts_with("</script>"),
                "script body in {script}"
            );
        }
        let names = attributes(html);
        assert!(!names.is_empty());
        for name in &names {
            assert!(
                !name.starts_with("on") && name != "style",
                "inline handler or style attribute {name:?}"
            );
        }
        assert!(!html.contains("<style"), "inline stylesheet");
        assert!(html.contains("href=\"console.css\""));
        // Data from the network goes in as text; the token never leaves sessionStorage.
        let js = FILES[1].2;
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
            "document.cookie",
            "setAttribute('style'",
            "http://",
            "https://",
        ] {
            assert!(!js.contains(banned), "console.js uses {banned}");
        }
        assert!(js.contains("sessionStorage.setItem(TOKEN_KEY"));
        // Nothing is fetched from elsewhere.
        for file in FILES {
            assert!(
                !file.2.contains("//cdn") && !file.2.contains("@import"),
                "{}",
                file.0
            );
        }
    }

    async fn serve(router: Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        addr
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// A plain GET over loopback, redirects not followed.
    async fn get(url: String, if_none_match: Option<String>) -> Answer {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into();
            let mut request = agent.get(&url);
            if let Some(tag) = &if_none_match {
                request = request.header("If-None-Match", tag);
            }
            let mut response = request.call().unwrap();
            Answer {
                status: response.status().as_u16(),
                headers: response
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect(),
                body: response.body_mut().read_to_string().unwrap_or_default(),
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn files_come_with_their_types_caching_and_security_headers() {
        let addr = serve(router()).await;
        for (path, content_type, body) in FILES {
            let url = format!("http://{addr}/console/{path}");
            let answer = get(url.clone(), None).await;
            assert_eq!(answer.status, 200, "{url}");
            assert_eq!(answer.header("content-type"), Some(content_type), "{url}");
            assert_eq!(answer.body, body, "{url}");
            for (name, value) in [
                ("content-security-policy", CONTENT_SECURITY_POLICY),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
                ("cache-control", "no-cache"),
            ] {
                assert_eq!(answer.header(name), Some(value), "{url} {name}");
            }
            assert!(
                CONTENT_SECURITY_POLICY.starts_with("default-src 'self'")
                    && !CONTENT_SECURITY_POLICY.contains("unsafe-inline")
            );
            // Revalidation: the same ETag answers 304 without a body, another one the file.
            let etag = answer.header("etag").expect("an ETag").to_string();
            let again = get(url.clone(), Some(etag.clone())).await;
            assert_eq!(again.status, 304, "{url}");
            assert!(again.body.is_empty());
            assert_eq!(again.header("etag"), Some(etag.as_str()));
            assert_eq!(again.header("x-frame-options"), Some("DENY"));
            let other = get(url.clone(), Some("\"stale\"".into())).await;
            assert_eq!(other.status, 200, "{url}");
        }
        let index = get(format!("http://{addr}/console/index.html"), None).await;
        assert_eq!(index.body, FILES[0].2);
        for path in ["/", "/console"] {
            let answer = get(format!("http://{addr}{path}"), None).await;
            assert_eq!(answer.status, 303, "{path}");
            assert_eq!(answer.header("location"), Some("/console/"), "{path}");
        }
        let missing = get(format!("http://{addr}/console/other.js"), None).await;
        assert_eq!(missing.status, 404);
    }
}
