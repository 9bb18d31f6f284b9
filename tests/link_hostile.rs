//! The agent–controller link against a hostile or stuck peer, with real processes on loopback:
//! a declared command printing 64 KiB of non-UTF-8 bytes on both streams (an answer of ~393 KB
//! once converted, over the 256 KiB frame limit) comes back through the agent truncated with a
//! marker, on the same connection; a controller that stops reading (or never welcomes) gets its connection
//! closed by the agent after the write timeout, which then reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nodewarden_shared::framing::{FrameDecoder, MAX_FRAME, encode_frame};
use nodewarden_shared::ops::{Operation, ServiceAction};
use nodewarden_shared::protocol::{
    self, AgentToController, CommandKind, CommandRequest, ControllerToAgent, Welcome,
};
use nodewarden_shared::tls;
use nodewarden_tests::lab::Lab;
use nodewarden_tests::wait_for;
use serde_json::Value;

/// 64 KiB of 0xff on stdout and on stderr, what no lossy conversion keeps under the limit.
const NOISY_STOP: &str =
    r"head -c 65536 /dev/zero | tr '\0' '\377'; head -c 65536 /dev/zero | tr '\0' '\377' >&2";

/// The lab, its agent restarted with a second declared service "noisy" whose stop command is
/// [`NOISY_STOP`] (the lab's own declarations are kept).
fn lab_with_noisy_service() -> Lab {
    let mut lab = Lab::new("");
    lab.stop_agent();
    let mut config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    config.push_str(&format!(
        "\n[[services]]\nname = \"noisy\"\nstart = [\"sleep\", \"301\"]\n\
         stop = [\"sh\", \"-c\", '''{NOISY_STOP}''']\npid_file = \"{}\"\n",
        lab.path("noisy.pid").display()
    ));
    std::fs::write(lab.path("agent.toml"), config).unwrap();
    lab.start_agent();
    // The restarted agent's connection, not the old one's last state.
    lab.agent_log().wait("connected to the controller");
    lab
}

fn post_action(lab: &Lab, body: Value) -> Vec<Value> {
    let mut response = lab
        .http_agent()
        .post(format!("{}/api/v1/actions", lab.api()))
        .header("Authorization", &format!("Bearer {}", lab.token()))
        .content_type("application/json")
        .send(body.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.body_mut().read_to_string().unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn an_answer_over_the_frame_limit_arrives_truncated_on_the_same_connection() {
    let lab = lab_with_noisy_service();
    let node = lab.wait_service(true, "stopped");
    assert_eq!(lab.agent_log().count("connected to the controller"), 1);
    let since = node["since"].as_u64().expect("the node's since");

    let lines = post_action(
        &lab,
        serde_json::json!({"selector": {"node": "n1"}, "action": "stop", "service": "noisy",
                           "requested_by": "test"}),
    );
    let result = lines
        .iter()
        .find(|l| l["event"] == "result")
        .map(|l| &l["result"])
        .unwrap_or_else(|| panic!("no result line: {lines:?}"));
    assert_eq!(result["path"], "agent", "{result}");
    let service = &result["results"][0]["outcome"]["service"];
    assert_eq!(service["ok"], true, "{result}");
    let report = &service["commands"][0];
    assert_eq!(report["argv"][0], "sh");
    assert_eq!(report["truncated"], true);
    for stream in ["stdout", "stderr"] {
        let text = report[stream].as_str().unwrap_or_default();
        assert!(text.starts_with('\u{fffd}'), "{stream}");
        let marker = text.rfind("… [truncated: ").expect("a truncation marker");
        assert!(text.ends_with(" bytes omitted]"), "{stream}");
        // Cut to share the frame, not emptied: more than a third of the 192 KiB each.
        assert!(marker > 64 * 1024, "{stream} kept only {marker} bytes");
    }
    assert_eq!(lines.last().unwrap()["ok"], true, "{lines:?}");
    assert_eq!(lab.agent_log().count("its longest texts were cut"), 1);

    // Still the same connection: no transition since, and nothing in the audit log says
    // otherwise once the operation is in it.
    let events = wait_for(
        "the stop of noisy in the audit log",
        Duration::from_secs(10),
        || {
            let events = lab.get_json("/api/v1/events?node=n1&limit=50");
            let list = events.as_array()?.clone();
            list.iter()
                .any(|e| {
                    e["kind"] == "operation"
                        && e["action"].as_str().is_some_and(|a| a.starts_with("stop"))
                        && e["path"] == "agent"
                        && e["result"] == "ok"
                })
                .then_some(list)
        },
    );
    let offline_since: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "offline" && e["at_ms"].as_u64() >= Some(since))
        .collect();
    assert!(offline_since.is_empty(), "{offline_since:?}");
    let node = lab.node().expect("n1");
    assert_eq!(node["online"], true);
    assert_eq!(node["since"].as_u64(), Some(since), "{node}");
    assert_eq!(lab.agent_log().count("connected to the controller"), 1);
    assert_eq!(lab.agent_log().count("link to the controller"), 0);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn read_frame(recv: &mut quinn::RecvStream, decoder: &mut FrameDecoder) -> Vec<u8> {
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return frame;
        }
        let chunk = recv
            .read_chunk(64 * 1024, true)
            .await
            .unwrap()
            .expect("the agent's stream");
        decoder.push(&chunk.bytes);
    }
}

async fn send(send: &mut quinn::SendStream, message: &ControllerToAgent) {
    let payload = protocol::encode(message).unwrap();
    send.write_all(&encode_frame(&payload, MAX_FRAME).unwrap())
        .await
        .unwrap();
}

#[test]
fn an_agent_whose_controller_stops_reading_reconnects() {
    let mut lab = lab_with_noisy_service();
    lab.wait_service(true, "stopped");
    // The lab's controller goes; a hand-made one takes its address: it welcomes the agent, asks
    // for the noisy stop, and never reads again.
    let config = std::fs::read_to_string(lab.path("agent.toml")).unwrap();
    let address: SocketAddr = config
        .lines()
        .find_map(|l| l.strip_prefix("address = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the agent's controller address")
        .parse()
        .unwrap();
    drop(lab.controller.take());
    lab.agent_log().wait("link to the controller");

    let read = |p: &str| std::fs::read_to_string(lab.path(p)).unwrap();
    let resolver = tls::single(tls::Identity {
        cert_pem: &read("ca/server.pem"),
        key_pem: &read("ca/server.key"),
    })
    .unwrap();
    let crypto = tls::server_config(
        &read("ca/ca.pem"),
        resolver,
        Arc::new(tls::RevokedSet::default()),
    )
    .unwrap();
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(crypto)).unwrap(),
    ));
    let mut transport = quinn::TransportConfig::default();
    // Room for the hello and a few reports, not for the answer.
    transport.stream_receive_window(16_384u32.into());
    transport.receive_window(16_384u32.into());
    transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().unwrap()));
    server.transport_config(Arc::new(transport));

    runtime().block_on(async {
        let endpoint = quinn::Endpoint::server(server, address).unwrap();
        let connection = endpoint.accept().await.unwrap().await.unwrap();
        let (mut tx, mut rx) = connection.accept_bi().await.unwrap();
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        let hello = read_frame(&mut rx, &mut decoder).await;
        assert!(matches!(
            protocol::decode::<AgentToController>(&hello),
            Ok(AgentToController::Hello(_))
        ));
        send(
            &mut tx,
            &ControllerToAgent::Welcome(Welcome {
                version: 1,
                node: "n1".into(),
                controller_version: "stuck".into(),
            }),
        )
        .await;
        send(
            &mut tx,
            &ControllerToAgent::CommandRequest(CommandRequest {
                id: 1,
                kind: CommandKind::Operation(Operation::service("noisy", ServiceAction::Stop)),
            }),
        )
        .await;
        // Never read again: the agent's answer cannot leave, and after its write timeout the
        // agent closes the connection, saying why.
        let closed = tokio::time::timeout(Duration::from_secs(30), connection.closed())
            .await
            .expect("the agent closed the stuck connection");
        match &closed {
            quinn::ConnectionError::ApplicationClosed(a) => assert_eq!(
                String::from_utf8_lossy(&a.reason),
                "agent reconnecting: the controller stopped reading"
            ),
            other => panic!("closed by {other:?}"),
        }
        // ... and comes back with its backoff. This time the controller takes the hello and
        // never welcomes the agent: the agent gives up after its welcome deadline.
        let again = tokio::time::timeout(Duration::from_secs(20), endpoint.accept())
            .await
            .expect("the agent reconnected")
            .unwrap()
            .await
            .unwrap();
        let (_tx, mut rx) = again.accept_bi().await.unwrap();
        let mut decoder = FrameDecoder::new(MAX_FRAME);
        let _hello = read_frame(&mut rx, &mut decoder).await;
        let closed = tokio::time::timeout(Duration::from_secs(30), again.closed())
            .await
            .expect("the agent closed the unwelcoming connection");
        match &closed {
            quinn::ConnectionError::ApplicationClosed(a) => assert_eq!(
                String::from_utf8_lossy(&a.reason),
                "no welcome from the controller within 10s"
            ),
            other => panic!("closed by {other:?}"),
        }
    });
    let log = lab.agent_log();
    log.wait("it stopped reading");
    assert_eq!(log.count("it stopped reading"), 1, "the agent's log line");
}
