//! The web console in a real browser: headless Chromium driven over WebDriver (the chromedriver
//! scripts/services.sh starts) against a real controller and agent on loopback
//! (`nodewarden_tests::lab`). Sign-in with a wrong and a right token, the fleet with the agent
//! online, actions clicked through the confirmation with their results on the page, in the audit
//! log view and in `GET /api/v1/events`, a rotated token sending the page back to sign-in (the
//! new one named, so the page shows its operator), and sign-out forgetting the token; and the
//! console over HTTPS (`[http] tls = true`) for a browser that pins the controller's key, and
//! not for one that does not. Every wait polls the DOM with a deadline.
//!
//! `NW_TEST_SCREENSHOT_DIR`, when set, receives screenshots of the main steps.

use std::future::Future;
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use nodewarden_tests::lab::{Lab, SERVICE_ARGV};
use nodewarden_tests::{alive, cmdline, service, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
/// Free text that goes into the audit log and back onto the page: it must come out as text.
const OPERATOR: &str = "console <i>tester</i>";

/// One Chromium session over WebDriver, driven synchronously. The session is closed when
/// dropped (also when a test fails), so no browser outlives the test.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    screenshots: Option<std::path::PathBuf>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(webdriver: &str, chromium: &str) -> Browser {
        Browser::start_with(webdriver, chromium, &[])
    }

    /// A session with `extra` Chromium arguments.
    fn start_with(webdriver: &str, chromium: &str, extra: &[String]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Without these the browser stalls on a machine without network (updates, sync, QUIC).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1500,1000",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(webdriver),
            )
            .unwrap_or_else(|e| panic!("a Chromium session through {webdriver}: {e}"));
        Browser {
            runtime,
            client: Some(client),
            screenshots: std::env::var_os("NW_TEST_SCREENSHOT_DIR").map(Into::into),
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    fn run<T>(&self, what: &str, step: impl Future<Output = Result<T, CmdError>>) -> T {
        self.runtime
            .block_on(step)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    fn goto(&self, url: &str) {
        self.run(&format!("opening {url}"), self.client().goto(url));
    }

    fn url(&self) -> String {
        self.run("the current URL", self.client().current_url())
            .to_string()
    }

    /// Runs `script` in the page with `args`; its return value.
    fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(
            &format!("running {script:?}"),
            self.client().execute(script, args),
        )
    }

    /// The text of the first element matching `css`, if there is one and it is visible (none of
    /// it or its ancestors hidden).
    fn visible_text(&self, css: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]);
             if (!e || e.closest('[hidden]') || e.closest('dialog:not([open])')) return null;
             return e.textContent;",
            vec![json!(css)],
        )
        .as_str()
        .map(str::to_string)
    }

    /// Waits until the element `css` is visible with a text `check` accepts; that text.
    fn wait_text(&self, css: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(&format!("{css} on the page"), WAIT, || {
                last = self.visible_text(css);
                last.clone().filter(|t| check(t))
            })
        }));
        found.unwrap_or_else(|_| {
            self.screenshot("timeout");
            panic!("{css}: last seen {last:?}")
        })
    }

    fn wait_hidden(&self, css: &str) {
        wait_for(&format!("{css} hidden"), WAIT, || {
            self.visible_text(css).is_none().then_some(())
        });
    }

    fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.run(css, self.client().find(Locator::Css(css)))
    }

    /// Clicks the element `css` selects. The console re-renders a table when an event arrives,
    /// so an element found a moment before may be replaced when it is clicked ("stale element
    /// reference"): it is then found again, a few times at most.
    fn click(&self, css: &str) {
        let mut attempt = 0;
        loop {
            let element = self.element(css);
            match self.runtime.block_on(element.click()) {
                Ok(()) => return,
                Err(e) if attempt < 5 && e.to_string().contains("stale element") => attempt += 1,
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.run(&format!("clearing {css}"), element.clear());
        self.run(&format!("typing into {css}"), element.send_keys(text));
    }

    fn session_token(&self) -> Value {
        self.js("return sessionStorage.getItem('nodewarden.token');", vec![])
    }

    fn screenshot(&self, name: &str) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        if let Ok(png) = self.runtime.block_on(self.client().screenshot()) {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(format!("console-{name}.png")), png);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && let Err(e) = self.runtime.block_on(client.close())
        {
            eprintln!("closing the browser session: {e}");
        }
    }
}

fn sign_in(browser: &Browser, token: &str) {
    browser.wait_text("#login-form", |_| true);
    browser.type_into("#login-operator", OPERATOR);
    browser.type_into("#login-token", token);
    browser.click("#login-submit");
}

/// The audit log entries of `node` through the API, newest first.
fn api_events(lab: &Lab, node: &str) -> Vec<Value> {
    let events = lab.get_json(&format!("/api/v1/events?node={node}&limit=50"));
    events.as_array().cloned().unwrap_or_default()
}

const ROW: &str = "#fleet-body tr[data-node='n1']";

/// chromedriver and Chromium from scripts/services.sh, and a lab (made by `make`) with its agent
/// online and its service stopped; `None` (skipped) without them outside CI.
fn browser_lab(make: fn(&str) -> Lab) -> Option<(Lab, String, String)> {
    let webdriver = service("NW_TEST_CHROMEDRIVER_URL")?;
    let chromium = service("NW_TEST_CHROMIUM")?;
    let lab = make("");
    lab.wait_service(true, "stopped");
    Some((lab, webdriver, chromium))
}

#[test]
fn an_operator_signs_in_sees_the_fleet_acts_on_a_node_and_signs_out() {
    let Some((lab, webdriver, chromium)) = browser_lab(Lab::new) else {
        return;
    };
    let browser = Browser::start(&webdriver, &chromium);

    // The root redirects to the console, which asks for the token.
    browser.goto(&format!("{}/", lab.api()));
    browser.wait_text("#login-form", |_| true);
    assert!(browser.url().ends_with("/console/"), "{}", browser.url());
    assert!(browser.visible_text("#app-view").is_none());

    // A wrong token: refused with a clear message, and not kept.
    sign_in(&browser, "not-the-api-token-0123456789");
    let message = browser.wait_text("#login-error", |t| !t.is_empty());
    assert!(
        message.contains("401") && message.contains("refused"),
        "{message}"
    );
    browser.screenshot("refused");
    assert_eq!(browser.session_token(), Value::Null);
    assert!(browser.visible_text("#app-view").is_none());

    // The right one: the fleet, with the agent online and what it reports.
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");
    browser.wait_text(&format!("{ROW} .node-services"), |t| {
        t == "sleeper: stopped"
    });
    let summary = browser.wait_text("#fleet-summary", |t| !t.is_empty());
    assert!(
        summary.starts_with("1 of 1 known nodes online"),
        "{summary}"
    );
    assert!(summary.contains("(1 device)"), "{summary}");
    assert_eq!(
        browser
            .visible_text(&format!("{ROW} .node-roles"))
            .as_deref(),
        Some("storage")
    );
    let storage = browser
        .visible_text(&format!("{ROW} .node-storage"))
        .unwrap();
    assert!(
        storage.starts_with("device 7: ") && storage.contains(" free of "),
        "{storage}"
    );
    let address = browser
        .visible_text(&format!("{ROW} .node-address"))
        .unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert!(browser.visible_text("#login-view").is_none());
    assert_eq!(
        browser.visible_text("#session-operator").as_deref(),
        Some(OPERATOR)
    );
    // The token is in this tab's sessionStorage only: no cookie, nothing in the URL.
    assert_eq!(browser.session_token(), json!(lab.token()));
    assert_eq!(browser.js("return document.cookie;", vec![]), json!(""));
    assert!(!browser.url().contains(&lab.token()));
    browser.screenshot("fleet");

    // Stop, cancelled at the confirmation: nothing is sent.
    browser.click(&format!("{ROW} button[data-action='stop']"));
    let question = browser.wait_text("#confirm-text", |t| !t.is_empty());
    assert!(
        question.contains("n1") && question.contains("stop"),
        "{question}"
    );
    browser.click("#confirm-cancel");
    browser.wait_hidden("#confirm-text");
    assert_eq!(
        browser
            .visible_text(&format!("{ROW} .node-result"))
            .as_deref(),
        Some("—")
    );

    // Wake, confirmed: the result on the page, the service really started, and its state
    // following in the fleet view.
    browser.click(&format!("{ROW} button[data-action='wake']"));
    let question = browser.wait_text("#confirm-text", |t| !t.is_empty());
    assert!(
        question.starts_with("Wake: start every managed service") && question.contains(" on n1?"),
        "{question}"
    );
    assert!(question.contains(OPERATOR), "{question}");
    browser.screenshot("confirm");
    browser.click("#confirm-ok");
    let result = browser.wait_text(&format!("{ROW} .result-summary"), |t| {
        !t.ends_with("running…")
    });
    assert!(result.starts_with("wake: ok via agent ("), "{result}");
    let pid = lab.pid();
    assert!(alive(pid), "pid {pid} is not running");
    assert_eq!(cmdline(pid), SERVICE_ARGV);
    browser.wait_text(&format!("{ROW} .node-services"), |t| {
        t == "sleeper: running"
    });

    // The audit log view shows the operation with who asked, as text (the name's markup is
    // not rendered).
    let audit = "#audit-body tr.operation .event-actor";
    let actor = browser.wait_text(audit, |t| t == OPERATOR);
    assert_eq!(actor, OPERATOR);
    let row = browser.js(
        "const tr = document.querySelector('#audit-body tr.operation');
         return [...tr.children].map((td) => td.textContent);",
        vec![],
    );
    let cells: Vec<&str> = row
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        cells[1..6],
        ["n1", "wake", OPERATOR, "agent", "ok"],
        "{cells:?}"
    );
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#audit-body i, #fleet-body i, #session i').length;",
            vec![]
        ),
        json!(0),
        "text from the network was rendered as HTML"
    );
    browser.screenshot("after-wake");
    // And the API has the same entry.
    let events = api_events(&lab, "n1");
    assert!(
        events.iter().any(|e| e["kind"] == "operation"
            && e["action"] == "wake"
            && e["actor"] == OPERATOR
            && e["path"] == "agent"
            && e["result"] == "ok"),
        "{events:?}"
    );

    // One service chosen in the row: the action names it.
    let select = browser.element(&format!("{ROW} select.node-service"));
    browser.run("choosing sleeper", select.select_by_value("sleeper"));
    browser.click(&format!("{ROW} button[data-action='stop']"));
    let question = browser.wait_text("#confirm-text", |t| !t.is_empty());
    assert!(
        question.contains("stop the service sleeper on n1"),
        "{question}"
    );
    browser.click("#confirm-ok");
    let result = browser.wait_text(&format!("{ROW} .result-summary"), |t| {
        t.starts_with("stop sleeper:") && !t.ends_with("running…")
    });
    assert!(result.starts_with("stop sleeper: ok via agent"), "{result}");
    assert!(!alive(pid), "pid {pid} survived stop");
    browser.wait_text(&format!("{ROW} .node-services"), |t| {
        t == "sleeper: stopped"
    });
    browser.wait_text("#audit-body tr.operation .event-what", |t| {
        t == "stop sleeper"
    });

    // The token rotated on the controller: the next refresh is refused, and the page says so
    // and forgets the old token.
    // The new token is named: it acts as operator carol.
    let rotated = "rotated-api-token-0123456789abcdef";
    std::fs::write(lab.path("data/api.token"), format!("carol {rotated}\n")).unwrap();
    let message = browser.wait_text("#login-error", |t| !t.is_empty());
    assert!(message.contains("401"), "{message}");
    assert_eq!(browser.session_token(), Value::Null);
    assert!(browser.visible_text("#app-view").is_none());

    // Signed in again with the new token, then out: the token is gone, and a reload asks for
    // it again.
    sign_in(&browser, rotated);
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");
    // The page shows the name the audit log will record: the token's, not the one typed.
    assert_eq!(
        browser.visible_text("#session-operator").as_deref(),
        Some("carol")
    );
    browser.click("#signout");
    browser.wait_text("#login-form", |_| true);
    assert_eq!(browser.session_token(), Value::Null);
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#fleet-body tr, #audit-body tr').length;",
            vec![]
        ),
        json!(0),
        "data stays on the page after sign-out"
    );
    browser.run("reloading", browser.client().refresh());
    browser.wait_text("#login-form", |_| true);
    assert!(browser.visible_text("#app-view").is_none());
    assert_eq!(browser.session_token(), Value::Null);
}

#[test]
fn the_console_and_the_events_api_over_plain_http() {
    let lab = Lab::new("");
    lab.wait_service(true, "stopped");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let get = |path: &str, token: Option<&str>| {
        let mut request = agent.get(format!("{}{path}", lab.api()));
        if let Some(t) = token {
            request = request.header("Authorization", &format!("Bearer {t}"));
        }
        let mut response = request.call().unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let headers = (
            header("content-type"),
            header("content-security-policy"),
            header("location"),
        );
        let status = response.status().as_u16();
        (
            status,
            headers,
            response.body_mut().read_to_string().unwrap(),
        )
    };

    // The console is served by the controller itself, without a token, under its policy.
    let (status, (_, _, location), _) = get("/", None);
    assert_eq!((status, location.as_deref()), (303, Some("/console/")));
    let (status, (content_type, csp, _), body) = get("/console/", None);
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert!(
        csp.is_some_and(|c| c.starts_with("default-src 'self'")),
        "a Content-Security-Policy"
    );
    assert!(body.contains("<script src=\"console.js\" defer></script>"));
    let (status, (content_type, _, _), _) = get("/console/console.js", None);
    assert_eq!(status, 200);
    assert_eq!(
        content_type.as_deref(),
        Some("text/javascript; charset=utf-8")
    );

    // The audit log API: behind the token, bounded, newest first.
    assert_eq!(get("/api/v1/events", None).0, 401);
    assert_eq!(get("/api/v1/events", Some("wrong-token-0123456789")).0, 401);
    let token = lab.token();
    for bad in ["limit=0", "limit=1001", "limit=x", "node=a/b", "since=1"] {
        let (status, _, body) = get(&format!("/api/v1/events?{bad}"), Some(&token));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{bad}: {body}");
    }
    let out = lab.cli(&["action", "status", "--node", "n1"], None);
    assert!(out.status.success());
    // The entry is in the database after the store's next flush (1 s by default).
    let events = wait_for("the status action in the audit log", WAIT, || {
        let (status, _, body) = get("/api/v1/events?limit=1000", Some(&token));
        assert_eq!(status, 200, "{body}");
        let events: Vec<Value> = serde_json::from_str(&body).unwrap();
        events
            .iter()
            .any(|e| e["kind"] == "operation" && e["action"] == "status")
            .then_some(events)
    });
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()),
        "newest first: {events:?}"
    );
    assert_eq!(events[0]["action"], "status", "{events:?}");
    assert_eq!(events[0]["actor"], "test");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "online" && e["node"] == "n1")
    );
    let (status, _, body) = get("/api/v1/events?limit=1&node=n1", Some(&token));
    assert_eq!(status, 200);
    let one: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], events[0]["id"]);
    let (_, _, body) = get("/api/v1/events?node=elsewhere", Some(&token));
    assert_eq!(body, "[]");
}

/// Chromium's pin for a certificate key: base64 of the SHA-256 of its SubjectPublicKeyInfo.
fn spki_pin(key_pem: &str) -> String {
    use base64::Engine as _;
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::from_pem(key_pem).expect("the server key");
    let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// With `[http] tls = true` the console works over HTTPS in a real browser: the page, its
/// script and style under the CSP, and its API calls. The browser trusts only the controller's
/// key (pinned); a browser without the pin does not get the page.
#[test]
fn the_console_works_over_https() {
    let Some((lab, webdriver, chromium)) = browser_lab(Lab::https) else {
        return;
    };
    let console = format!("{}/console/", lab.api());
    assert!(console.starts_with("https://"), "{console}");

    let stranger = Browser::start(&webdriver, &chromium);
    stranger.goto(&console);
    assert_eq!(
        stranger.js(
            "return document.querySelector('#login-form') === null;",
            vec![]
        ),
        json!(true),
        "a browser that does not trust the certificate got the console"
    );
    drop(stranger);

    let key = std::fs::read_to_string(lab.path("ca/server.key")).unwrap();
    let browser = Browser::start_with(
        &webdriver,
        &chromium,
        &[format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_pin(&key)
        )],
    );
    browser.goto(&console);
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");
    browser.wait_text(&format!("{ROW} .node-services"), |t| {
        t == "sleeper: stopped"
    });
    assert_eq!(
        browser.js("return location.protocol;", vec![]),
        json!("https:")
    );
    // The stylesheet loaded under the CSP over HTTPS: the page has its colours.
    assert_eq!(
        browser.js(
            "return getComputedStyle(document.documentElement).getPropertyValue('--accent').trim();",
            vec![]
        ),
        json!("#0b5cad")
    );
    assert!(browser.visible_text("#login-view").is_none());
    browser.screenshot("https-fleet");
}

/// Fragment deletion from the console: pairs typed in, a malformed line caught in the page, the
/// confirmation, real files removed on the node (and only those), the per-node result on the
/// page and the operation in the audit log; a hostile id refused by the controller with
/// nothing deleted.
#[test]
fn fragments_are_deleted_from_the_console() {
    let Some((lab, webdriver, chromium)) = browser_lab(Lab::new) else {
        return;
    };
    for f in [
        "fragments/101",
        "fragments/101.digest",
        "fragments/102",
        "fragments/1010",
        "sentinel",
    ] {
        std::fs::write(lab.path(f), f).unwrap();
    }
    let browser = Browser::start(&webdriver, &chromium);
    browser.goto(&format!("{}/console/", lab.api()));
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");

    // Malformed lines: the page says which as they are typed, and offers nothing to delete.
    for (text, problem) in [
        ("101 7\n102", "line 2: expected"),
        ("abc 1", "line 1: fragment id \"abc\" is not"),
        (
            "1010 7\n../sentinel 7\n",
            "line 2: fragment id \"../sentinel\" is not",
        ),
        ("07 7", "line 1: fragment id \"07\" has a leading zero"),
        ("1 4294967296", "line 1: device id 4294967296 is too large"),
        (
            "18446744073709551616 7",
            "line 1: fragment id 18446744073709551616 is too large",
        ),
    ] {
        browser.type_into("#fragments-pairs", text);
        let check = browser.wait_text("#fragments-check", |t| t.contains(problem));
        assert!(check.contains(problem), "{text:?}: {check}");
        assert_eq!(
            browser.js(
                "return document.getElementById('fragments-submit').disabled;",
                vec![]
            ),
            json!(true),
            "{text:?} is offered for deletion"
        );
        // Submitting anyway (the form's own submit event) asks nothing and sends nothing.
        browser.js(
            "document.getElementById('fragments-form').requestSubmit();",
            vec![],
        );
        let status = browser.wait_text("#fragments-status", |t| t.contains(problem));
        assert!(status.starts_with("nothing to delete"), "{status}");
        assert!(browser.visible_text("#confirm-text").is_none());
    }
    assert!(lab.path("fragments/1010").exists() && lab.path("sentinel").exists());

    // Two fragments on device 7: confirmed, deleted on the node, the result on the page.
    browser.type_into("#fragments-pairs", "101 7\n# a comment\n102 7\n");
    browser.click("#fragments-submit");
    let question = browser.wait_text("#confirm-text", |t| !t.is_empty());
    assert!(
        question.starts_with("Delete 2 fragment(s) on device(s) 7?") && question.contains(OPERATOR),
        "{question}"
    );
    browser.screenshot("fragments-confirm");
    browser.click("#confirm-ok");
    let result = browser.wait_text("#fragments-results li .result-summary", |_| true);
    assert!(result.starts_with("n1: ok via agent ("), "{result}");
    let detail = browser.wait_text("#fragments-results li .result-detail", |_| true);
    assert_eq!(detail, "device 7: 2 fragments, 0 failed");
    for gone in ["fragments/101", "fragments/101.digest", "fragments/102"] {
        assert!(!lab.path(gone).exists(), "{gone} survived");
    }
    for kept in ["fragments/1010", "sentinel"] {
        assert!(lab.path(kept).exists(), "{kept} was touched");
    }
    browser.screenshot("fragments-done");
    let recorded = wait_for("the deletion in the audit log", WAIT, || {
        api_events(&lab, "n1")
            .into_iter()
            .find(|e| e["kind"] == "operation" && e["actor"] == OPERATOR)
    });
    assert!(
        recorded["action"]
            .as_str()
            .is_some_and(|a| a.starts_with("delete fragments")),
        "{recorded}"
    );

    // An id the page accepts for a device no node has: the controller refuses the whole batch
    // (the page's check is a convenience; the controller's is the rule), nothing is deleted.
    browser.type_into("#fragments-pairs", "1010 7\n1011 99\n");
    browser.wait_text("#fragments-check", |t| t == "2 valid pair(s)");
    browser.click("#fragments-submit");
    browser.wait_text("#confirm-text", |t| !t.is_empty());
    browser.click("#confirm-ok");
    let status = browser.wait_text("#fragments-status", |t| t.starts_with("refused"));
    assert!(status.contains("404"), "{status}");
    assert!(lab.path("fragments/1010").exists() && lab.path("sentinel").exists());
}

/// Two declared nodes that never connected (offline, no role) beside the lab's `n1`.
fn lab_with_cold_nodes(_: &str) -> Lab {
    Lab::new("[nodes.aa-cold]\nservices = [\"web\"]\n[nodes.zz-cold]\nservices = [\"db\"]\n")
}

/// The fleet rows in page order (a node listed under two roles appears once per listing).
fn fleet_order(browser: &Browser) -> Vec<String> {
    let order = browser.js(
        "return [...document.querySelectorAll('#fleet-body tr')]
           .map((tr) => tr.dataset.node || (tr.dataset.group ? '#' + tr.dataset.group : '+' + tr.dataset.copyOf));",
        vec![],
    );
    serde_json::from_value(order).unwrap()
}

/// Sets a filter control's value as an operator would (an `input`/`change` event).
fn set_control(browser: &Browser, id: &str, value: &str) {
    browser.js(
        "const e = document.getElementById(arguments[0]);
         if (e.type === 'checkbox') e.checked = arguments[1] === 'on'; else e.value = arguments[1];
         e.dispatchEvent(new Event('input')); e.dispatchEvent(new Event('change'));",
        vec![json!(id), json!(value)],
    );
}

fn wait_order(browser: &Browser, want: &[&str]) {
    let mut last = Vec::new();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(&format!("fleet rows {want:?}"), WAIT, || {
            last = fleet_order(browser);
            (last == want).then_some(())
        })
    }));
    if found.is_err() {
        browser.screenshot("order-timeout");
        panic!("fleet rows: want {want:?}, last seen {last:?}");
    }
}

/// The problems view (offline nodes, a firing alert from the webhook, shown as text); the fleet
/// table with a node's health figures from its state reports; sorting by column
/// (missing figures last either way), the role, state and text filters, grouping by role; and
/// two nodes selected (one through its role group) acted on with one confirmation, each node's
/// own result on the page, the service really started, the operation in the audit log.
#[test]
fn the_fleet_table_sorts_filters_groups_and_acts_on_several_nodes() {
    let Some((lab, webdriver, chromium)) = browser_lab(lab_with_cold_nodes) else {
        return;
    };
    let browser = Browser::start(&webdriver, &chromium);
    browser.goto(&format!("{}/console/", lab.api()));
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");

    // Health from the state reports: load1, memory and root disk use, storage free per device.
    // Load against the node's CPUs, as its report gives them: "0.52 / 8".
    let load = browser.wait_text(&format!("{ROW} .node-load"), |t| t != "—");
    let cpus = lab.node().unwrap()["last_report"]["cpus"]
        .as_u64()
        .expect("cpus reported");
    let (value, per) = load
        .split_once(" / ")
        .unwrap_or_else(|| panic!("load {load:?}"));
    assert_eq!(per, cpus.to_string(), "{load}");
    let value: f64 = value.parse().unwrap_or_else(|_| panic!("load {load:?}"));
    assert!(
        value >= 0.0
            && load
                .split('.')
                .nth(1)
                .is_some_and(|d| d.starts_with(|c: char| c.is_ascii_digit())
                    && d.split(' ').next().unwrap().len() == 2),
        "{load}"
    );
    let health = lab.node().unwrap()["last_report"]["health"].clone();
    assert!(
        health["memory_total_bytes"].as_u64().unwrap() > 0,
        "{health}"
    );
    for cell in ["node-memory", "node-disk"] {
        let text = browser.wait_text(&format!("{ROW} .{cell}"), |t| t.contains(" % ("));
        let pct: f64 = text.split(' ').next().unwrap().parse().unwrap();
        assert!((0.0..=100.0).contains(&pct), "{cell}: {text}");
        assert!(text.contains(" of "), "{cell}: {text}");
    }
    let storage = browser.wait_text(&format!("{ROW} .node-storage"), |t| t.contains('%'));
    assert!(
        storage.starts_with("device 7: ") && storage.contains(" free of "),
        "{storage}"
    );
    assert!(
        browser
            .wait_text(&format!("{ROW} .node-since"), |t| t.starts_with("since "))
            .ends_with(" ago")
    );
    // The fleet comes over the live stream (server-sent events).
    browser.wait_text("#live", |t| t == "live updates");
    // The declared nodes never reported: their figures are unknown, not zero.
    let cold = "#fleet-body tr[data-node='aa-cold']";
    assert_eq!(
        browser.wait_text(&format!("{cold} .node-state"), |_| true),
        "offline"
    );
    assert_eq!(
        browser.visible_text(&format!("{cold} .node-load")).unwrap(),
        "—"
    );
    assert_eq!(
        browser
            .visible_text(&format!("{cold} .node-memory"))
            .unwrap(),
        "—"
    );
    browser.screenshot("fleet-table");

    // Problems: the two offline nodes, and an alert Alertmanager sends, linked to its node.
    for cold in ["aa-cold", "zz-cold"] {
        let text = browser.wait_text(
            &format!("#problems-list li[data-kind='offline'][data-node='{cold}']"),
            |_| true,
        );
        assert!(
            text.starts_with(&format!("{cold}: offline since")),
            "{text}"
        );
    }
    assert!(
        browser
            .visible_text("#problems-list li[data-node='n1']")
            .is_none(),
        "n1 listed as a problem"
    );
    let alert = r#"{"version":"4","receiver":"nodewarden","status":"firing","alerts":[
        {"status":"firing","labels":{"alertname":"NodewardenDeviceFull","severity":"critical","node":"n1"},
         "annotations":{"summary":"device 7 <b>nearly</b> full"},"startsAt":"2026-12-05T10:00:00Z",
         "fingerprint":"full7"}]}"#;
    let status = lab
        .http_agent()
        .post(format!("{}/api/v1/alerts/webhook", lab.api()))
        .header("Content-Type", "application/json")
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .send(alert)
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200);
    let text = browser.wait_text(
        "#problems-list li[data-kind='alert'][data-node='n1']",
        |_| true,
    );
    assert_eq!(
        text,
        "n1: alert NodewardenDeviceFull (critical): device 7 <b>nearly</b> full, since 2026-12-05T10:00:00Z"
    );
    let summary = browser.wait_text("#problems-summary", |t| t.contains("1 firing"));
    assert!(summary.starts_with("2 offline"), "{summary}");
    browser.screenshot("problems");

    // Sorting: by name (the default), reversed, by load (unknown last either way), by state.
    wait_order(&browser, &["aa-cold", "n1", "zz-cold"]);
    browser.click("#fleet-table th[data-sort='name']");
    wait_order(&browser, &["zz-cold", "n1", "aa-cold"]);
    browser.click("#fleet-table th[data-sort='load']");
    wait_order(&browser, &["n1", "aa-cold", "zz-cold"]);
    browser.click("#fleet-table th[data-sort='load']");
    wait_order(&browser, &["n1", "aa-cold", "zz-cold"]);
    assert_eq!(
        browser.js(
            "return document.querySelector(\"#fleet-table th[data-sort='load']\").getAttribute('aria-sort');",
            vec![]
        ),
        json!("descending")
    );
    browser.click("#fleet-table th[data-sort='state']");
    wait_order(&browser, &["aa-cold", "zz-cold", "n1"]);
    browser.click("#fleet-table th[data-sort='name']");
    wait_order(&browser, &["aa-cold", "n1", "zz-cold"]);

    // Filters: state, role, free text (names, services, addresses), and together.
    set_control(&browser, "filter-state", "online");
    wait_order(&browser, &["n1"]);
    assert_eq!(
        browser.wait_text("#fleet-shown", |t| !t.is_empty()),
        "1 of 3 nodes shown"
    );
    set_control(&browser, "filter-state", "offline");
    wait_order(&browser, &["aa-cold", "zz-cold"]);
    set_control(&browser, "filter-state", "");
    set_control(&browser, "filter-role", "storage");
    wait_order(&browser, &["n1"]);
    set_control(&browser, "filter-role", "none");
    wait_order(&browser, &["aa-cold", "zz-cold"]);
    set_control(&browser, "filter-role", "");
    set_control(&browser, "filter-text", "sleeper");
    wait_order(&browser, &["n1"]);
    set_control(&browser, "filter-text", "ZZ db");
    wait_order(&browser, &["zz-cold"]);
    set_control(&browser, "filter-text", "no-such-node");
    wait_order(&browser, &[]);
    set_control(&browser, "filter-text", "");
    wait_order(&browser, &["aa-cold", "n1", "zz-cold"]);
    assert_eq!(browser.visible_text("#fleet-shown"), Some(String::new()));

    // Grouped by role: a heading per role, the nodes under it.
    set_control(&browser, "group-role", "on");
    wait_order(
        &browser,
        &["#no role", "aa-cold", "zz-cold", "#storage", "n1"],
    );
    browser.screenshot("fleet-grouped");

    // Select the "no role" group, then n1, then drop zz-cold: one confirmation for two nodes.
    browser.click("#fleet-body tr[data-group='no role'] input.select-group");
    browser.wait_text("#bulk-count", |t| t == "2 nodes selected");
    browser.click(&format!("{ROW} input.node-check"));
    browser.wait_text("#bulk-count", |t| t == "3 nodes selected");
    browser.click("#fleet-body tr[data-node='zz-cold'] input.node-check");
    browser.wait_text("#bulk-count", |t| t == "2 nodes selected");
    assert_eq!(
        browser.js(
            "return document.querySelector(\"#fleet-body tr[data-group='no role'] input\").checked;",
            vec![]
        ),
        json!(false),
        "the group box stays checked with one of its nodes dropped"
    );
    browser.click(".bulk-action[data-action='wake']");
    let question = browser.wait_text("#confirm-text", |t| !t.is_empty());
    assert!(
        question.starts_with("Wake: start every managed service")
            && question.contains("on 2 nodes (aa-cold, n1)?"),
        "{question}"
    );
    browser.screenshot("fleet-bulk-confirm");
    browser.click("#confirm-ok");
    browser.wait_hidden("#confirm-text");
    let ok = browser.wait_text(&format!("{ROW} .node-result .result-summary"), |t| {
        !t.contains("running")
    });
    assert!(ok.starts_with("wake: ok via agent ("), "{ok}");
    let failed = browser.wait_text(
        "#fleet-body tr[data-node='aa-cold'] .node-result .result-summary",
        |t| !t.contains("running"),
    );
    assert!(failed.starts_with("wake: failed"), "{failed}");
    assert_eq!(
        browser.visible_text("#fleet-body tr[data-node='zz-cold'] .node-result"),
        Some("—".into()),
        "an unselected node was acted on"
    );
    browser.screenshot("fleet-bulk-done");
    // End state: n1's service runs, and the audit log has the operation under the operator.
    lab.wait_service(true, "running");
    let recorded = wait_for("the wake in the audit log", WAIT, || {
        api_events(&lab, "n1")
            .into_iter()
            .find(|e| e["kind"] == "operation" && e["actor"] == OPERATOR)
    });
    assert_eq!(recorded["result"], "ok", "{recorded}");
}

/// At phone width (390 px) the console fits: the page does not scroll sideways (only the
/// tables do, inside their box), the filters and bulk actions wrap within the screen.
#[test]
fn the_console_is_usable_at_phone_width() {
    let Some((lab, webdriver, chromium)) = browser_lab(Lab::new) else {
        return;
    };
    let browser = Browser::start(&webdriver, &chromium);
    browser.run(
        "a 390 px window",
        browser.client().set_window_size(390, 844),
    );
    browser.goto(&format!("{}/console/", lab.api()));
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");
    let width = browser.js("return window.innerWidth;", vec![]);
    assert!(width.as_u64().is_some_and(|w| w <= 400), "viewport {width}");
    let overflow = browser.js(
        "const out = [];
         const vw = document.documentElement.clientWidth;
         if (document.documentElement.scrollWidth > vw) out.push('page ' + document.documentElement.scrollWidth);
         for (const id of ['filter-text', 'filter-role', 'filter-state', 'bulk-clear', 'signout',
                           'fragments-pairs', 'fragments-submit']) {
           const r = document.getElementById(id).getBoundingClientRect();
           if (r.width === 0 || r.left < 0 || r.right > vw) out.push(id + ' ' + r.left + '..' + r.right);
         }
         return out;",
        vec![],
    );
    assert_eq!(overflow, json!([]), "outside a {width} px screen");
    browser.screenshot("phone");
    // Still usable: a filter narrows the table, a node can be selected.
    set_control(&browser, "filter-text", "n1");
    wait_order(&browser, &["n1"]);
    browser.click(&format!("{ROW} input.node-check"));
    browser.wait_text("#bulk-count", |t| t == "1 node selected");
}

fn lab_with_links(_: &str) -> Lab {
    Lab::new(
        "[grafana]\nurl = \"http://grafana.invalid:3000/\"\n\
         [prometheus]\nurl = \"http://prometheus.invalid:9090\"\n",
    )
}

/// The node page: reached from the fleet table, the node's facts, devices, services and recent
/// events, the four charts drawn from the controller's history of its reports (and growing as
/// reports come), the links to Grafana and Prometheus from the configuration; the history API's
/// answers (points, 404 for an unknown node, 401 without the token).
#[test]
fn the_node_page_shows_charts_devices_services_events_and_links() {
    let Some((lab, webdriver, chromium)) = browser_lab(lab_with_links) else {
        return;
    };
    // The API first: the history has the node's reports, at most one per interval.
    let history = wait_for("a point in n1's history", WAIT, || {
        let h = lab.get_json("/api/v1/nodes/n1/history");
        (!h["points"].as_array()?.is_empty()).then_some(h)
    });
    assert_eq!(history["interval_ms"], 5000, "{history}");
    assert_eq!(history["cap"], 720, "{history}");
    let point = &history["points"][0];
    assert!(point["memory_total_bytes"].as_u64().unwrap() > 0, "{point}");
    assert_eq!(point["devices"][0]["device_id"], 7, "{point}");
    let (status, body) = lab
        .get_as(&lab.token(), "/api/v1/nodes/nope/history")
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown node"));
    let (status, _) = lab.get_as("wrong", "/api/v1/nodes/n1/history").unwrap();
    assert_eq!(status, 401);
    let (status, _) = lab.get_as("wrong", "/api/v1/console").unwrap();
    assert_eq!(status, 401);
    let (status, _) = lab.get_as("wrong", "/api/v1/stream").unwrap();
    assert_eq!(status, 401);

    let browser = Browser::start(&webdriver, &chromium);
    browser.goto(&format!("{}/console/", lab.api()));
    sign_in(&browser, &lab.token());
    browser.wait_text(&format!("{ROW} .node-state"), |t| t == "online");
    browser.click(&format!("{ROW} .node-name a"));
    assert_eq!(browser.wait_text("#node-title", |t| !t.is_empty()), "n1");
    assert!(browser.url().ends_with("#node/n1"), "{}", browser.url());
    assert!(
        browser.visible_text("#fleet-summary").is_none(),
        "the fleet still shows"
    );

    // Facts, devices, services, events.
    let facts = browser.wait_text("#node-facts", |t| t.starts_with("online since"));
    assert!(facts.contains("roles storage"), "{facts}");
    let device = browser.wait_text("#node-devices-body tr[data-device='7']", |_| true);
    assert!(
        device.contains(&lab.path("fragments").display().to_string()),
        "{device}"
    );
    browser.wait_text("#node-services", |t| t.contains("sleeper: stopped"));
    browser.wait_text("#node-events-body", |t| t.contains("online"));

    // The charts: drawn, and growing as the controller keeps more reports (one per 5 s).
    let points = browser.wait_text("#node-points", |t| t.contains("report(s) since"));
    assert!(
        points.contains("one every 5 s at most, the last 720 kept"),
        "{points}"
    );
    let counts = |browser: &Browser| {
        browser.js(
            "return ['load', 'memory', 'disk', 'storage'].map((c) => {
               const e = document.getElementById('chart-' + c);
               return e.querySelector('canvas') ? Number(e.dataset.points) : -1;
             });",
            vec![],
        )
    };
    let first = wait_for("four charts drawn", WAIT, || {
        let c: Vec<i64> = serde_json::from_value(counts(&browser)).ok()?;
        c.iter().all(|n| *n >= 1).then_some(c)
    });
    wait_for("the charts growing", WAIT, || {
        let c: Vec<i64> = serde_json::from_value(counts(&browser)).ok()?;
        c.iter().all(|n| *n > first[0]).then_some(())
    });
    assert_eq!(
        browser.js(
            "return document.querySelector('#chart-storage .u-legend').textContent.includes('device 7');",
            vec![]
        ),
        json!(true)
    );
    browser.screenshot("node-page");

    // Links from the configuration, to this node.
    let grafana = browser.js(
        "return document.querySelector('#node-links a.link-grafana').href;",
        vec![],
    );
    let grafana = grafana.as_str().unwrap();
    assert!(
        grafana.starts_with(
            "http://grafana.invalid:3000/d/nodewarden/nodewarden?var-instance=127.0.0.1%3A"
        ),
        "{grafana}"
    );
    let prometheus = browser.js(
        "return document.querySelector('#node-links a.link-prometheus').href;",
        vec![],
    );
    let prometheus = prometheus.as_str().unwrap();
    assert!(
        prometheus
            .starts_with("http://prometheus.invalid:9090/graph?g0.expr=%7Bnode%3D%22n1%22%7D"),
        "{prometheus}"
    );

    // Back to the fleet.
    browser.click("#node-back");
    browser.wait_text("#fleet-summary", |t| !t.is_empty());
    browser.wait_hidden("#node-title");
}

fn lab_with_prometheus(_: &str) -> Lab {
    let prometheus = std::env::var("NW_TEST_PROMETHEUS_URL").expect("checked by the test");
    Lab::new(&format!("[prometheus]\nurl = \"{prometheus}\"\n"))
}

/// With `[prometheus] url` (the suite's real Prometheus), the node page's charts come from it:
/// the last hour on one 30 s grid, through `GET /api/v1/nodes/{name}/prometheus`.
#[test]
fn the_node_page_charts_come_from_prometheus_when_configured() {
    if service("NW_TEST_PROMETHEUS_URL").is_none() {
        return;
    }
    let Some((lab, webdriver, chromium)) = browser_lab(lab_with_prometheus) else {
        return;
    };
    let charts = lab.get_json("/api/v1/nodes/n1/prometheus");
    assert_eq!(charts["node"], "n1", "{charts}");
    assert_eq!(
        charts["times"].as_array().map(Vec::len),
        Some(121),
        "{charts}"
    );
    let browser = Browser::start(&webdriver, &chromium);
    browser.goto(&format!("{}/console/#node/n1", lab.api()));
    sign_in(&browser, &lab.token());
    browser.wait_text("#node-points", |t| {
        t.contains("Charts: the last hour from Prometheus.")
    });
    let drawn = wait_for("four charts from Prometheus", WAIT, || {
        let c = browser.js(
            "const s = document.getElementById('node-charts').dataset.source;
             return [s].concat(['load', 'memory', 'disk', 'storage'].map((c) => {
               const e = document.getElementById('chart-' + c);
               return e.querySelector('canvas') ? e.dataset.points : '-';
             }));",
            vec![],
        );
        let c: Vec<String> = serde_json::from_value(c).ok()?;
        (c[0] == "prometheus" && c[1..].iter().all(|n| n == "121")).then_some(c)
    });
    assert_eq!(drawn.len(), 5);
}

/// A device's fragments view against a real audit: the lab's controller with `[dfs]` on the
/// suite's MariaDB, its agent with `[fragments]` over a real folder (a sound, a corrupt and a
/// digest-less fragment, two old orphans, a row without a file). The problems view lists the
/// device's fragment problems and links to the view; the view shows each state's count, bytes
/// and sample ids with the node and the audit time; a row the DFS gains shows after **Audit
/// again** (a fresh audit, one orphan fewer); the node page's device links to the same view; a
/// device without an inventory says so.
#[test]
fn a_device_s_fragments_view_shows_its_audit() {
    use nodewarden_tests::dfs::{age, enable_fragments, fragment, lab_with_dfs};
    let (Some(mysql), Some(webdriver), Some(chromium)) = (
        service("NW_TEST_MYSQL_URL"),
        service("NW_TEST_CHROMEDRIVER_URL"),
        service("NW_TEST_CHROMIUM"),
    ) else {
        return;
    };
    // The lab's agent has no [fragments]: the folder is filled, then it restarts with one.
    let (dfs, mut lab) = lab_with_dfs(&mysql);
    let d = lab.path("fragments");
    // 100: sound. 101: corrupt. 102: no digest. 200, 201: orphans. 300: missing.
    fragment(&d, 100, b"fragment 100", Some(b"fragment 100"));
    fragment(&d, 101, b"rotten!", Some(b"fragment 101"));
    fragment(&d, 102, b"fragment 102", None);
    fragment(&d, 200, b"orphan 200", Some(b"orphan 200"));
    fragment(&d, 201, b"orphan 2001", Some(b"orphan 2001"));
    for id in [100, 101, 102, 200, 201] {
        age(&d.join(id.to_string()), Duration::from_secs(2 * 3600));
    }
    dfs.insert(&[(100, 7), (101, 7), (102, 7), (300, 7)]);
    enable_fragments(
        &lab,
        "scrub_period = \"1h\"\norphan_grace = \"1h\"\nio_mb_per_s = 100\n",
    );
    lab.start_agent();
    // The scrub's verdict has reached the controller (its audits hold the corrupt fragment).
    wait_for(
        "an audit of device 7 with the scrub's verdict",
        WAIT,
        || {
            let v = lab.get_json("/api/v1/fragments/audit");
            v.as_array()?
                .iter()
                .any(|a| a["device_id"] == 7 && a["audit"]["corrupt"]["count"] == 1)
                .then_some(())
        },
    );

    let browser = Browser::start(&webdriver, &chromium);
    browser.goto(&format!("{}/console/", lab.api()));
    sign_in(&browser, &lab.token());
    let problem = "#problems-list li.problem.fragments[data-device='7']";
    let text = browser.wait_text(problem, |t| t.contains("corrupt"));
    assert_eq!(
        text,
        "n1: device 7: 1 missing, 1 corrupt, 2 orphaned (21 B), 1 without digest fragment(s) fragments",
    );
    browser.wait_text("#problems-summary", |t| {
        t.contains("1 device(s) with fragment problems")
    });
    browser.click(&format!("{problem} a.fragments-link"));
    assert_eq!(
        browser.wait_text("#device-fragments-title", |t| !t.is_empty()),
        "7"
    );
    assert!(browser.url().ends_with("#fragments/7"), "{}", browser.url());
    assert!(
        browser.visible_text("#fleet-summary").is_none(),
        "the fleet still shows"
    );
    let facts = browser.wait_text("#device-fragments-facts", |t| t.contains("audited"));
    assert!(facts.starts_with("on n1 · inventory received "), "{facts}");
    // Each state: (count, bytes, sample ids) as the page shows them; the audit samples no
    // present ids.
    let rows = |browser: &Browser| -> Value {
        browser.js(
            "return Object.fromEntries([...document.querySelectorAll('#device-fragments-body tr')]
               .map((tr) => [tr.dataset.state, [tr.querySelector('.state-count').textContent,
                 tr.querySelector('.state-bytes').dataset.bytes,
                 tr.querySelector('.state-sample').dataset.ids]]));",
            vec![],
        )
    };
    let first = wait_for("the audit's rows", WAIT, || {
        let r = rows(&browser);
        (r.as_object()?.len() == 5).then_some(r)
    });
    assert_eq!(
        first,
        json!({
            "present": ["5", "52", ""],
            "missing": ["1", "0", "300"],
            "orphaned": ["2", "21", "200 201"],
            "corrupt": ["1", "7", "101"],
            "no_digest": ["1", "12", "102"],
        })
    );
    assert_eq!(
        browser.visible_text("#device-fragments-body tr[data-state='orphaned'] .state-bytes"),
        Some("21 B".to_string())
    );
    browser.screenshot("device-fragments");

    // The DFS gains a row for orphan 200: a fresh audit shows one orphan fewer.
    let audited = browser.js(
        "return document.getElementById('device-fragments-facts').dataset.audited;",
        vec![],
    );
    dfs.insert(&[(200, 7)]);
    browser.click("#device-fragments-reaudit");
    let second = wait_for("a fresh audit on the page", WAIT, || {
        let now = browser.js(
            "return document.getElementById('device-fragments-facts').dataset.audited;",
            vec![],
        );
        let r = rows(&browser);
        (now != audited && r["orphaned"][0] == "1").then_some(r)
    });
    assert_eq!(second["orphaned"], json!(["1", "11", "201"]));
    assert_eq!(second["missing"], json!(["1", "0", "300"]));

    // From the node page's device.
    browser.goto(&format!("{}/console/#node/n1", lab.api()));
    browser.wait_text(
        "#node-devices-body tr[data-device='7'] a.fragments-link",
        |t| t == "fragments",
    );
    browser.click("#node-devices-body tr[data-device='7'] a.fragments-link");
    browser.wait_text(
        "#device-fragments-body tr[data-state='corrupt'] .state-sample",
        |t| t == "101",
    );
    assert!(browser.url().ends_with("#fragments/7"), "{}", browser.url());

    // A device without an inventory.
    browser.goto(&format!("{}/console/#fragments/99", lab.api()));
    browser.wait_text("#device-fragments-status", |t| {
        t.starts_with("No fragment inventory of device 99 yet")
    });
    assert_eq!(
        browser.js(
            "return document.querySelectorAll('#device-fragments-body tr').length;",
            vec![]
        ),
        json!(0)
    );
    browser.click("#device-fragments-back");
    browser.wait_text("#fleet-summary", |t| !t.is_empty());
}
