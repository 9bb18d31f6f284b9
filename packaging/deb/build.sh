#!/usr/bin/env bash
# Builds nodewarden-agent_<version>_<arch>.deb and nodewarden-controller_<version>_<arch>.deb with
# plain dpkg-deb (nothing else to install) from release binaries.
#
# Usage: packaging/deb/build.sh [--out DIR] [--version VERSION] [--bin-dir DIR] [--fast]
#   binaries: ${CARGO_TARGET_DIR:-target}/release/nodewarden-{agent,controller}, or --bin-dir's
#             (cargo build --release -p nodewarden-agent && cargo build --release -p nodewarden-controller:
#             built apart, so that the controller's dependency features do not bloat the agent)
#   --fast:   gzip -1 instead of xz (the test suite's packages of its own debug binaries)
#   version:  the workspace version in Cargo.toml unless --version is given
#   arch:     dpkg --print-architecture (DEB_ARCH overrides)
#   DEB_MAINTAINER overrides the Maintainer field.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/target/debian"
version=""
bin_dir=""
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "$version" ]; then
  # The first `version = "..."` in the workspace manifest is [workspace.package]'s.
  version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
fi
[ -n "$version" ] || { echo "build.sh: no version in $root/Cargo.toml; pass --version" >&2; exit 1; }
arch=${DEB_ARCH:-$(dpkg --print-architecture)}
maintainer=${DEB_MAINTAINER:-"nodewarden developers <nodewarden@example.org>"}
target_dir=${CARGO_TARGET_DIR:-$root/target}
release=${bin_dir:-$target_dir/release}

for bin in nodewarden-agent nodewarden-controller; do
  [ -x "$release/$bin" ] || {
    echo "build.sh: $release/$bin is missing: run cargo build --release -p nodewarden-agent && cargo build --release -p nodewarden-controller" >&2
    exit 1
  }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# The lowest glibc the binary's symbol versions require, for Depends.
glibc_needed() {
  objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1
}

install_file() { # MODE SRC DEST
  install -D -m "$1" "$2" "$3"
}

# common_files PKG DIR: binary (stripped), unit, defaults, maintainer scripts, documentation.
common_files() {
  local pkg=$1 dir=$2
  install -D -m 0755 "$release/$pkg" "$dir/usr/bin/$pkg"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$dir/usr/bin/$pkg"
  install_file 0644 "$root/systemd/$pkg.service" "$dir/lib/systemd/system/$pkg.service"
  mkdir -p "$dir/usr/share/man/man8"
  gzip -9n <"$here/man/$pkg.8" >"$dir/usr/share/man/man8/$pkg.8.gz"
  chmod 0644 "$dir/usr/share/man/man8/$pkg.8.gz"
  install_file 0644 "$here/$pkg/default" "$dir/etc/default/$pkg"
  for script in postinst prerm postrm; do
    install_file 0755 "$here/$pkg/$script" "$dir/DEBIAN/$script"
  done
  local doc="$dir/usr/share/doc/$pkg"
  local year; year=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y)
  install_file 0644 "$root/docs/operations.md" "$doc/operations.md"
  cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nodewarden

Files: *
Copyright: $year nodewarden developers
License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
  chmod 0644 "$doc/copyright"
  printf '%s (%s) unstable; urgency=medium\n\n  * Built from the nodewarden source tree.\n\n -- %s  %s\n' \
    "$pkg" "$version" "$maintainer" "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")" |
    gzip -9n >"$doc/changelog.gz"
  chmod 0644 "$doc/changelog.gz"
  # unsafe-libyaml (a Rust translation of libyaml, for the YAML web config) is compiled in;
  # there is no system library to link instead.
  if [ "$pkg" = nodewarden-agent ]; then
    mkdir -p "$dir/usr/share/lintian/overrides"
    printf '%s\n' "# libyaml translated to Rust (unsafe-libyaml crate); no shared library to use." \
      "nodewarden-agent: embedded-library libyaml [usr/bin/nodewarden-agent]" \
      >"$dir/usr/share/lintian/overrides/$pkg"
    chmod 0644 "$dir/usr/share/lintian/overrides/$pkg"
  fi
}

# finish PKG DIR DEPENDS DESCRIPTION...: control, conffiles, md5sums, then dpkg-deb.
finish() {
  local pkg=$1 dir=$2 depends=$3 extra=$4 description=$5
  (cd "$dir" && find etc -type f | sort | sed 's|^|/|') >"$dir/DEBIAN/conffiles"
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs -d '\n' md5sum) >"$dir/DEBIAN/md5sums"
  chmod 0644 "$dir/DEBIAN/conffiles" "$dir/DEBIAN/md5sums"
  local size; size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    [ -n "$extra" ] && printf '%s\n' "$extra"
    echo "Section: admin"
    echo "Priority: optional"
    printf 'Description: %s\n' "$description"
  } >"$dir/DEBIAN/control"
  chmod 0644 "$dir/DEBIAN/control"
  find "$dir" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group "${compress[@]}" --build "$dir" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${version}_${arch}.deb"
}

# --- nodewarden-agent ---
agent="$stage/nodewarden-agent"
common_files nodewarden-agent "$agent"
for example in 50-nodewarden-agent.rules nodewarden-agent.sudoers; do
  install_file 0644 "$root/systemd/examples/$example" "$agent/usr/share/doc/nodewarden-agent/examples/$example"
done
finish nodewarden-agent "$agent" \
  "libc6 (>= $(glibc_needed "$release/nodewarden-agent")), libisal2, adduser" \
  "" \
  "node agent: node_exporter-compatible metrics and a controller link
 nodewarden-agent serves the Prometheus node_exporter metrics (same names,
 labels and flags, port 9100) plus DFS storage device metrics, keeps a
 mutually authenticated QUIC link to the nodewarden controller, and performs
 only the operations its configuration declares."

# --- nodewarden-controller ---
controller="$stage/nodewarden-controller"
common_files nodewarden-controller "$controller"
share="$controller/usr/share/nodewarden"
install_file 0644 "$root/packaging/prometheus/prometheus.yml" "$share/prometheus/prometheus.yml"
for rules in "$root"/packaging/prometheus/rules/*.yml; do
  install_file 0644 "$rules" "$share/prometheus/rules/$(basename "$rules")"
done
install_file 0644 "$root/packaging/alertmanager/alertmanager.yml" "$share/alertmanager/alertmanager.yml"
install_file 0644 "$root/packaging/grafana/nodewarden-dashboard.json" "$share/grafana/nodewarden-dashboard.json"
for kind in datasources dashboards; do
  install_file 0644 "$root/packaging/grafana/provisioning/$kind/nodewarden.yaml" \
    "$share/grafana-provisioning/$kind/nodewarden.yaml"
done
install_file 0644 "$here/nodewarden-controller/controller.toml" "$controller/etc/nodewarden/controller.toml"
finish nodewarden-controller "$controller" \
  "libc6 (>= $(glibc_needed "$release/nodewarden-controller")), adduser" \
  "Recommends: prometheus, prometheus-pushgateway, prometheus-alertmanager
Suggests: grafana, influxdb, mariadb-server" \
  "fleet controller for nodewarden agents
 nodewarden-controller runs the CA and the QUIC endpoint the agents link to,
 keeps fleet state and an audit log (embedded SQLite or MySQL), pushes fleet
 aggregates to the Prometheus Pushgateway, serves Prometheus service discovery,
 an HTTP API and a web console, and carries out remote operations.
 .
 Ships the Prometheus configuration, alert and recording rules, the Alertmanager
 configuration and the Grafana dashboard under /usr/share/nodewarden."
