//! The controller's HTTP server over HTTPS (`[http] tls = true`, the link's server certificate)
//! with real processes on loopback: a controller and an agent (`nodewarden_tests::lab`), the CLI,
//! and a Prometheus of the test's own (`NW_TEST_PROMETHEUS_BIN`) that discovers the agent through
//! the controller's HTTPS service discovery and scrapes the controller over HTTPS, trusting only
//! the controller's CA. Needs `cargo build --workspace`.

use std::time::Duration;

use nodewarden_tests::lab::Lab;
use nodewarden_tests::{
    free_port, prometheus_query, result_len, series_labels, service, start_prometheus, wait_for,
};

#[test]
fn api_cli_and_prometheus_over_https_and_nothing_in_clear() {
    let lab = Lab::https("");
    // The API answers over HTTPS to a client that trusts the controller's CA.
    lab.wait_service(true, "stopped");

    // Plain HTTP to the HTTPS port gets no answer, so a token sent that way reaches nothing.
    let plain = format!("http://127.0.0.1:{}/api/v1/nodes", lab.admin_port);
    let e = ureq::get(&plain)
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .call()
        .expect_err("plain HTTP on the HTTPS port");
    eprintln!("plain HTTP: {e}");
    // A client that trusts only the public roots refuses the controller's certificate.
    let e = ureq::get(format!("{}/api/v1/nodes", lab.api()))
        .call()
        .expect_err("the controller's CA is not a public root");
    assert!(
        e.to_string().contains("UnknownIssuer") || e.to_string().contains("certificate"),
        "{e}"
    );
    lab.controller
        .as_ref()
        .unwrap()
        .1
        .wait("HTTPS handshake refused");
    // The token check still applies inside TLS.
    let (status, _) = lab.get_as("not-the-token", "/api/v1/nodes").unwrap();
    assert_eq!(status, 401);

    // The CLI: refused without the CA (its default <data-dir>/ca/ca.pem is absent here),
    // through with it.
    let token = lab.path("data/api.token");
    let token = token.to_str().unwrap();
    let out = lab.cli(
        &["action", "status", "--node", "n1", "--token-file", token],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&lab.api()), "{stderr}");
    let ca = lab.path("ca/ca.pem");
    // The CLI with the lab's token and CA.
    let cli = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--token-file", token, "--ca-file", ca.to_str().unwrap()]);
        lab.cli(&args, None)
    };
    let out = cli(&["action", "status", "--node", "n1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("[1/1] n1: ok via agent"), "{stdout}");
    let out = cli(&["nodes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains(" online ")),
        "{stdout}"
    );

    let groups = lab.get_json("/api/v1/sd/agents");
    assert_eq!(groups[0]["labels"]["node"], "n1", "{groups}");

    // Prometheus discovers the agent through HTTPS service discovery (the API token is accepted
    // there) and scrapes the controller's /metrics over HTTPS, with the CA as its only trust.
    let Some(prometheus_bin) = service("NW_TEST_PROMETHEUS_BIN") else {
        return;
    };
    let dir = lab.path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("prometheus.yml");
    let tls = serde_json::json!({ "ca_file": ca });
    let yaml = serde_json::json!({
        "global": { "scrape_interval": "1s" },
        "scrape_configs": [
            {
                "job_name": "nodes",
                "http_sd_configs": [{
                    "url": format!("{}/api/v1/sd/agents", lab.api()),
                    "refresh_interval": "1s",
                    "authorization": { "type": "Bearer", "credentials_file": token },
                    "tls_config": tls,
                }],
            },
            {
                "job_name": "nodewarden-controller",
                "scheme": "https",
                "tls_config": tls,
                "static_configs": [{ "targets": [format!("127.0.0.1:{}", lab.admin_port)] }],
            },
        ],
    });
    std::fs::write(&config, serde_yaml_ng::to_string(&yaml).unwrap()).unwrap();
    let (_prometheus, prometheus) =
        start_prometheus(&prometheus_bin, &config, &dir.join("data"), port);
    let up = wait_for(
        "the agent and the controller both up over HTTPS",
        Duration::from_secs(30),
        || {
            let answer = prometheus_query(&prometheus, "up == 1");
            (result_len(&answer) == 2).then_some(answer)
        },
    );
    assert_eq!(
        series_labels(&up, &["job", "node"]),
        [vec!["nodes", "n1"], vec!["nodewarden-controller", ""]]
    );
}

/// A renewed certificate is served without a restart: `ca server` re-issues the controller's
/// pair under another name, and the next connections see it (the old name refused, the new one
/// verified), while the controller keeps running.
#[test]
fn a_renewed_certificate_is_served_without_a_restart() {
    let lab = Lab::https("");
    lab.wait_service(true, "stopped");
    let nodes = |host: &str| {
        lab.http_agent()
            .get(format!("https://{host}:{}/api/v1/nodes", lab.admin_port))
            .header("Authorization", &format!("Bearer {}", lab.token()))
            .call()
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string())
    };
    assert_eq!(nodes("127.0.0.1"), Ok(200));
    // The lab's certificate names 127.0.0.1 only.
    assert!(nodes("localhost").is_err());

    let out = std::process::Command::new(nodewarden_tests::bin_path("nodewarden-controller"))
        .args(["ca", "server", "--dir"])
        .arg(lab.path("ca"))
        .args(["--san", "localhost"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the renewed certificate served",
        Duration::from_secs(10),
        || (nodes("localhost") == Ok(200)).then_some(()),
    );
    let e = nodes("127.0.0.1").expect_err("the old name is no longer in the certificate");
    assert!(e.contains("NotValidForName") || e.contains("name"), "{e}");
    lab.controller
        .as_ref()
        .unwrap()
        .1
        .wait("HTTPS certificate reloaded");
}

/// An agent that serves its metrics over TLS (`--web.config.file`) announces it, and service
/// discovery gives Prometheus `https` for it alone: a real Prometheus, trusting the CA of the
/// agent's web certificate, scrapes it over HTTPS through plain discovery.
#[test]
fn an_agent_serving_tls_metrics_is_discovered_as_https() {
    use nodewarden_shared::ca::{Validity, issue_server_cert};
    let Some(prometheus_bin) = service("NW_TEST_PROMETHEUS_BIN") else {
        return;
    };
    let mut lab = Lab::new("");
    lab.wait_service(true, "stopped");
    let groups = lab.get_json("/api/v1/sd/agents");
    assert_eq!(groups[0]["labels"]["node"], "n1", "{groups}");
    assert!(groups[0]["labels"].get("__scheme__").is_none(), "{groups}");

    // The agent again, with TLS on its metrics port (a certificate from the lab's CA).
    let ca = nodewarden_controller::cadir::CaDir::new(lab.path("ca"))
        .ca()
        .unwrap();
    let web = issue_server_cert(
        &ca,
        &["127.0.0.1".into()],
        Validity::days_from(time::OffsetDateTime::now_utc(), 1),
    )
    .unwrap();
    std::fs::write(lab.path("web.pem"), &web.cert_pem).unwrap();
    std::fs::write(lab.path("web.key"), web.key_pem.as_deref().unwrap()).unwrap();
    std::fs::write(
        lab.path("web.yml"),
        "tls_server_config:\n  cert_file: web.pem\n  key_file: web.key\n",
    )
    .unwrap();
    lab.stop_agent();
    lab.start_agent_with(&[format!(
        "--web.config.file={}",
        lab.path("web.yml").display()
    )]);
    let groups = wait_for("n1 discovered with https", Duration::from_secs(20), || {
        let groups = lab.get_json("/api/v1/sd/agents");
        (groups[0]["labels"]["__scheme__"] == "https").then_some(groups)
    });
    let target = groups[0]["targets"][0].as_str().unwrap().to_string();

    let dir = lab.path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    let yaml = serde_json::json!({
        "global": { "scrape_interval": "1s" },
        "scrape_configs": [{
            "job_name": "nodes",
            "http_sd_configs": [{
                "url": format!("{}/api/v1/sd/agents", lab.api()),
                "refresh_interval": "1s",
                "authorization": { "type": "Bearer", "credentials_file": lab.path("data/api.token") },
            }],
            "tls_config": { "ca_file": lab.path("ca/ca.pem") },
        }],
    });
    std::fs::write(&config, serde_yaml_ng::to_string(&yaml).unwrap()).unwrap();
    let (_prometheus, prometheus) =
        start_prometheus(&prometheus_bin, &config, &dir.join("data"), free_port());
    wait_for(
        "Prometheus scraping n1 over HTTPS",
        Duration::from_secs(30),
        || {
            let answer = prometheus_query(&prometheus, "up{job=\"nodes\",node=\"n1\"} == 1");
            (result_len(&answer) == 1).then_some(())
        },
    );
    let targets = nodewarden_tests::get_text(&format!("{prometheus}/api/v1/targets")).unwrap();
    assert!(
        targets.contains(&format!("\"scrapeUrl\":\"https://{target}/metrics\"")),
        "{targets}"
    );
}
