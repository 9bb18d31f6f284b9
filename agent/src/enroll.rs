//! `nodewarden-agent enroll --csr`: makes the node's key and a certificate signing request.
//! The key never leaves the node; the CSR goes to `nodewarden-controller ca sign`, which sets
//! the certificate's name, validity and usages itself.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgMatches, Command};

pub fn command() -> Command {
    Command::new("enroll")
        .about("Create this node's key and a CSR for the controller's CA")
        .arg(
            Arg::new("csr")
                .long("csr")
                .action(ArgAction::SetTrue)
                .required(true)
                .help("Write a key and a certificate signing request (the only mode so far)."),
        )
        .arg(
            Arg::new("name")
                .long("name")
                .required(true)
                .help("The node name the certificate will carry."),
        )
        .arg(
            Arg::new("key-out")
                .long("key-out")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where to write the private key (mode 0600; never overwritten)."),
        )
        .arg(
            Arg::new("csr-out")
                .long("csr-out")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Where to write the CSR."),
        )
}

fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}", path.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("{}", path.display()))
}

pub fn run(m: &ArgMatches) -> anyhow::Result<()> {
    let name = m.get_one::<String>("name").cloned().unwrap_or_default();
    let key_out = m.get_one::<PathBuf>("key-out").cloned().unwrap_or_default();
    let csr_out = m.get_one::<PathBuf>("csr-out").cloned().unwrap_or_default();
    let (key, csr) = nodewarden_shared::ca::create_csr(&name)?;
    write_new(&key_out, &key, 0o600)?;
    if let Err(e) = write_new(&csr_out, &csr, 0o644) {
        // Do not leave a key without its request.
        let _ = std::fs::remove_file(&key_out);
        return Err(e);
    }
    println!(
        "wrote key {} and CSR {} for node {name}; sign it with: nodewarden-controller ca sign --csr {} --node {name} ...",
        key_out.display(),
        csr_out.display(),
        csr_out.display()
    );
    Ok(())
}
