//! `nodewarden-agent op` and `nodewarden-agent ssh-dispatch`: one declared operation, run locally
//! from the agent's config, its result printed as one JSON line. `ssh-dispatch` is the forced
//! command of the controller's key in the node's `authorized_keys`:
//!
//! ```text
//! command="/usr/bin/nodewarden-agent ssh-dispatch --config /etc/nodewarden/agent.toml",restrict ssh-ed25519 AAAA… nodewarden-controller
//! ```
//!
//! sshd then runs this for every login with that key, whatever command the client asked for, and
//! puts the request in `SSH_ORIGINAL_COMMAND`; only an operation line naming a declared service
//! or device is ever acted on, so a stolen key cannot run anything else.

use std::path::Path;

use nodewarden_shared::ops::{Operation, OperationResult};

use super::{Executor, OpsConfig};

/// Exit status when the operation ran and succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status when it ran and failed (a service did not start, a fragment could not be deleted).
pub const EXIT_FAILED: i32 = 1;
/// Exit status when it was refused and nothing ran.
pub const EXIT_REFUSED: i32 = 3;

pub fn exit_code(result: &OperationResult) -> i32 {
    if result.is_refused() {
        EXIT_REFUSED
    } else if result.succeeded() {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

async fn run(config: &Path, parsed: Result<Operation, String>) -> OperationResult {
    let op = match parsed {
        Ok(op) => op,
        Err(reason) => {
            tracing::warn!(%reason, "operation refused");
            return OperationResult::refused(None, reason);
        }
    };
    match OpsConfig::load(config) {
        Ok(c) => Executor::new(&c).execute(&op).await,
        Err(e) => OperationResult::refused(Some(op), e.to_string()),
    }
}

/// `nodewarden-agent op <words>`: the words of an operation line after `nodewarden-op`.
pub async fn run_words(config: &Path, words: &[String]) -> OperationResult {
    run(
        config,
        Operation::parse_words(words).map_err(|e| e.to_string()),
    )
    .await
}

/// `ssh-dispatch`: the line sshd put in `SSH_ORIGINAL_COMMAND` (`None` for an interactive login,
/// which is refused).
pub async fn run_ssh_line(config: &Path, line: Option<&str>) -> OperationResult {
    let parsed = match line {
        None => Err("no command: this key may only run nodewarden operations".to_string()),
        Some(line) => Operation::parse_line(line).map_err(|e| e.to_string()),
    };
    run(config, parsed).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_lines_touch_nothing() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("frag")).unwrap();
        for f in ["x", "2", "frag/1", "frag/1.digest", "frag/12"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::fs::create_dir(r.join("frag/1;rm")).unwrap();
        let config = r.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[[storage.devices]]\nid = 3\nfragment_dir = \"{}/frag\"\n",
                r.display()
            ),
        )
        .unwrap();
        for line in [
            "nodewarden-op delete-fragments 3 ../x",
            "nodewarden-op delete-fragments 3 1/2",
            "nodewarden-op delete-fragments 3 -rf",
            "nodewarden-op delete-fragments 3 1;rm",
            "nodewarden-op delete-fragments 3 1 ../x",
            "nodewarden-op delete-fragments 3 01",
            "nodewarden-op delete-fragments 3 1\n",
            "rm -rf frag",
            "nodewarden-op delete-fragments 4 1",
        ] {
            let result = run_ssh_line(&config, Some(line)).await;
            assert!(result.is_refused(), "{line:?}: {result:?}");
            assert_eq!(exit_code(&result), EXIT_REFUSED);
        }
        assert!(run_ssh_line(&config, None).await.is_refused());
        let words: Vec<String> = ["delete-fragments", "3", "-rf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(run_words(&config, &words).await.is_refused());
        for f in ["x", "2", "frag/1", "frag/1.digest", "frag/12", "frag/1;rm"] {
            assert!(r.join(f).exists(), "{f} was touched");
        }
        // The well-formed request does delete.
        let result = run_ssh_line(&config, Some("nodewarden-op delete-fragments 3 1")).await;
        assert_eq!(exit_code(&result), EXIT_OK, "{result:?}");
        assert!(!r.join("frag/1").exists() && !r.join("frag/1.digest").exists());
        assert!(r.join("frag/12").exists());
    }

    #[tokio::test]
    async fn a_bad_config_is_named_in_the_refusal() {
        let result = run_ssh_line(
            Path::new("/nonexistent/agent.toml"),
            Some("nodewarden-op service x status"),
        )
        .await;
        let line = result.to_json_line();
        assert!(line.contains("/nonexistent/agent.toml"), "{line}");
    }
}
