//! Replays every fuzz target's committed inputs on stable, through the very harness functions
//! the `fuzz/` crate's targets call: `fuzz/corpus/<target>/*` (the seeds) and
//! `fuzz/regressions/<target>/*` (every crash the fuzzer found, kept after its fix). Needs no
//! service and no nightly, so a regression fails the ordinary test run. Also checks that the
//! table below and `fuzz/fuzz_targets/` name the same targets, each calling its harness.

use std::path::{Path, PathBuf};

/// `(target name, harness path as the target file spells it, harness)`.
type Target = (&'static str, &'static str, fn(&[u8]));

macro_rules! targets {
    ($($krate:ident :: $func:ident => $name:literal),* $(,)?) => {
        &[$((
            $name,
            concat!(stringify!($krate), "::fuzzing::", stringify!($func)),
            $krate::fuzzing::$func,
        )),*]
    };
}

const TARGETS: &[Target] = targets![
    nodewarden_shared::frame_decoder => "shared_frame_decoder",
    nodewarden_shared::message_up => "shared_message_up",
    nodewarden_shared::message_down => "shared_message_down",
    nodewarden_shared::session_controller => "shared_session_controller",
    nodewarden_shared::session_agent => "shared_session_agent",
    nodewarden_shared::fragment_pairs => "shared_fragment_pairs",
    nodewarden_shared::fragment_inventory => "shared_fragment_inventory",
    nodewarden_shared::fragment_delta => "shared_fragment_delta",
    nodewarden_shared::operation_line => "shared_operation_line",
    nodewarden_shared::operation_result_json => "shared_operation_result_json",
    nodewarden_agent::textfile => "agent_textfile",
    nodewarden_agent::webconfig => "agent_webconfig",
    nodewarden_agent::config => "agent_config",
    nodewarden_agent::proc_stat => "agent_proc_stat",
    nodewarden_agent::proc_meminfo => "agent_proc_meminfo",
    nodewarden_agent::proc_mounts => "agent_proc_mounts",
    nodewarden_agent::proc_diskstats => "agent_proc_diskstats",
    nodewarden_agent::proc_net_dev => "agent_proc_net_dev",
    nodewarden_agent::proc_net_snmp => "agent_proc_net_snmp",
    nodewarden_agent::proc_net_netstat => "agent_proc_net_netstat",
    nodewarden_agent::proc_mdstat => "agent_proc_mdstat",
    nodewarden_controller::config => "controller_config",
    nodewarden_controller::api_action => "controller_api_action",
    nodewarden_controller::api_assign_device => "controller_api_assign_device",
    nodewarden_controller::pairs_file => "controller_pairs_file",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_replays() {
    let mut replayed = 0;
    for (name, _, harness) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "fuzz/corpus/{name} has no seed");
        for file in seeds
            .iter()
            .chain(&inputs(&fuzz_dir().join("regressions").join(name)))
        {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            eprintln!("replaying {}", file.display());
            harness(&data);
            replayed += 1;
        }
    }
    eprintln!("{replayed} inputs replayed");
}

#[test]
fn the_table_matches_the_fuzz_targets() {
    let mut files: Vec<String> = inputs(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|t| t.0.to_string()).collect();
    names.sort();
    assert_eq!(files, names, "fuzz/fuzz_targets/ and this table differ");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, path, _) in TARGETS {
        let file = fuzz_dir().join(format!("fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("{path}(")),
            "{} does not call {path}",
            file.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
