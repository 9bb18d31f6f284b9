fn main() {
    eprintln!(
        "nodewarden-controller {}: not yet implemented (see issues 3-6)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
