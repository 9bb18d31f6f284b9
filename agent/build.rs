//! Links the agent's binary with its hot functions (those a start and a few scrapes run, listed in
//! `link-order.txt` by `scripts/agent-link-order.sh`) placed together, so that the kernel maps
//! fewer of the binary's pages: ≈ 0.9 MiB of code runs, spread over 4.4 MiB of text otherwise
//! (docs/perf.md). Only where the linker is LLD (Rust's default for x86_64-unknown-linux-gnu);
//! names that no longer exist after a code change are skipped, so a stale list costs memory, not
//! correctness.

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join("link-order.txt");
    if !order.is_file() {
        println!("cargo:warning=agent/link-order.txt is missing: the agent links without it");
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=nodewarden-agent=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=nodewarden-agent=-Wl,--no-warn-symbol-ordering");
}
