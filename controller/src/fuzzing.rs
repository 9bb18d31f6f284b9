//! Fuzz harnesses for what the controller parses from operators and the DFS: one function per
//! `fuzz/fuzz_targets/controller_*.rs` target, taking the fuzzer's bytes. The same functions
//! replay the committed corpora on stable (`tests/fuzz_corpus.rs`). An error is fine; a panic
//! (including a broken property asserted here), an overflow or a hang is a bug.

use std::path::Path;
use std::time::Duration;

use nodewarden_shared::ops::{Operation, deletions_by_device};
use nodewarden_shared::protocol::Role;

use crate::api_actions::{check_requester, plan};
use crate::config::{ActionsConfig, ControllerConfig};
use crate::registry::{KnownDevice, KnownNode, Registry};
use crate::wire::{ActionRequest, AssignDevice};

/// A fleet of two storage nodes (devices 3 and 4, service `dfs`) and a Ray node, all offline.
fn fleet() -> Registry {
    let node = |name: &str, role, devices: &[u32]| KnownNode {
        name: name.to_string(),
        roles: vec![role],
        services: vec!["dfs".to_string()],
        inventory: None,
        last_ip: None,
        last_seen: 1,
        devices: devices
            .iter()
            .map(|&device_id| KnownDevice {
                device_id,
                fragment_dir: "/srv/fragments".into(),
                total_bytes: 1 << 40,
                free_bytes: 1 << 39,
                error: None,
            })
            .collect(),
    };
    Registry::restore(vec![
        node("s1", Role::Storage, &[3]),
        node("s2", Role::Storage, &[4]),
        node("r1", Role::Ray, &[]),
    ])
}

fn actions_config() -> ActionsConfig {
    ActionsConfig {
        operation_timeout: Duration::from_secs(5),
        limits: crate::actions::Limits {
            link: 4,
            fallback: 4,
        },
        wake_wait: Duration::from_secs(5),
        ssh: Default::default(),
        nodes: Default::default(),
    }
}

/// Serialising a parsed body and parsing it again gives the same JSON.
fn assert_json_round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_value(value).expect("a parsed body serialises");
    let again: T = serde_json::from_value(json.clone()).expect("a serialised body parses");
    assert_eq!(serde_json::to_value(&again).expect("serialises"), json);
}

/// `POST /api/v1/actions`'s body: parsed as the handler does, then planned against a small
/// fleet. A plan's operations are all valid (what is refused is refused before anything is
/// sent).
pub fn api_action(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ActionRequest>(data) else {
        return;
    };
    assert_json_round_trips(&request);
    let Ok(plan) = plan(&request, &fleet(), &actions_config()) else {
        return;
    };
    assert!(!plan.each.is_empty(), "an empty plan");
    for (reach, action) in &plan.each {
        for op in action.operations(&reach.services) {
            op.validate().expect("a planned operation validates");
        }
    }
}

/// `POST /api/v1/devices/{id}/owner`'s body: parsed as the handler does, the requester checked,
/// and the move applied to a small fleet: afterwards the named node owns the device.
pub fn api_assign_device(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<AssignDevice>(data) else {
        return;
    };
    assert_json_round_trips(&request);
    if check_requester(&request.requested_by).is_err() {
        return;
    }
    let mut registry = fleet();
    for device_id in [3, 4, 5] {
        if registry.assign_device(device_id, &request.node).is_ok() {
            assert_eq!(
                registry.device_owner(device_id),
                Some(request.node.as_str())
            );
        }
    }
}

/// The CLI's `delete-fragments --pairs FILE` text (one `fid device` pair per line, or a JSON
/// list of pairs), then through the same validation as the API (`deletions_by_device`).
pub fn pairs_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pairs) = crate::client::parse_pairs(text, "pairs.txt") else {
        return;
    };
    assert!(!pairs.is_empty());
    let texts: Vec<(String, String)> = pairs.iter().map(|(f, d)| (f.text(), d.text())).collect();
    if let Ok(ops) = deletions_by_device(texts.iter().map(|(f, d)| (f.as_str(), d.as_str()))) {
        assert!(!ops.is_empty());
        for op in &ops {
            assert!(matches!(op, Operation::DeleteFragments { .. }));
            op.validate().expect("a built deletion validates");
        }
    }
}

/// The controller's TOML (`serve --config`): parsed and every section resolved and checked
/// (relative paths resolve in a directory that does not exist; nothing is read).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ControllerConfig::parse(
        text,
        Path::new("/nonexistent/nodewarden-fuzz/controller.toml"),
    );
}
