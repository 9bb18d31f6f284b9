# Starts the real services the test suite needs, on free loopback ports under one temporary
# directory, and stops them on exit. Sourced by scripts/test.sh; later features add a start_*
# function here and call it from start_services.
#
# Every service exports NW_TEST_* variables the tests read. The tests fail (never skip) when a
# variable is missing and NW_REQUIRE_SERVICES=1, which scripts/test.sh always sets.

# What building needs beyond a Rust toolchain and a C compiler: the agent links Debian's ISA-L
# (gzip) and needs its headers and link name. scripts/demo.sh installs these too.
NW_BUILD_PACKAGES=(libisal-dev)
NW_PACKAGES=("${NW_BUILD_PACKAGES[@]}" lintian mariadb-server prometheus prometheus-pushgateway prometheus-alertmanager
             prometheus-node-exporter openssh-server influxdb chromium chromium-driver curl
             iproute2 strace btrfs-progs dbus-daemon chrony supervisor)

# ensure_packages [PKG...]: installs those missing (default: all of NW_PACKAGES) with apt.
ensure_packages() {
  local missing=()
  [ $# -gt 0 ] || set -- "${NW_PACKAGES[@]}"
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The repository this file belongs to (shipped configuration is read from it).
NW_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

NW_PIDS=()
nw_stop_services() {
  for pid in "${NW_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NW_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${NW_TMP:-}" ] && rm -rf "$NW_TMP"
}

# wait_http NAME URL LOG: polls until URL answers (the service's own readiness), 60 s at most.
wait_http() {
  local name=$1 url=$2 log=$3
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "!! $name did not come up at $url; its log:" >&2
  tail -n 30 "$log" >&2
  return 1
}

start_node_exporter() {
  local port; port=$(free_port)
  prometheus-node-exporter --web.listen-address="127.0.0.1:$port" >"$NW_TMP/node_exporter.log" 2>&1 &
  NW_PIDS+=($!)
  wait_http node_exporter "http://127.0.0.1:$port/metrics" "$NW_TMP/node_exporter.log"
  export NW_TEST_NODE_EXPORTER_URL="http://127.0.0.1:$port/metrics"
}

start_prometheus() {
  local port; port=$(free_port)
  mkdir -p "$NW_TMP/prometheus/sd" "$NW_TMP/prometheus/data"
  # The shipped rules are loaded so tests see the recording rules and alerts evaluate for real.
  cat >"$NW_TMP/prometheus/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - "$NW_REPO/packaging/prometheus/rules/*.yml"
scrape_configs:
  - job_name: nodes
    file_sd_configs:
      - files: ["$NW_TMP/prometheus/sd/*.json"]
        refresh_interval: 1s
YML
  prometheus --config.file="$NW_TMP/prometheus/prometheus.yml" \
    --storage.tsdb.path="$NW_TMP/prometheus/data" \
    --web.listen-address="127.0.0.1:$port" >"$NW_TMP/prometheus.log" 2>&1 &
  NW_PIDS+=($!)
  wait_http prometheus "http://127.0.0.1:$port/-/ready" "$NW_TMP/prometheus.log"
  export NW_TEST_PROMETHEUS_URL="http://127.0.0.1:$port"
  export NW_TEST_PROMETHEUS_SD_DIR="$NW_TMP/prometheus/sd"
  export NW_TEST_PROMTOOL="$(command -v promtool)"
  export NW_TEST_PROMETHEUS_BIN="$(command -v prometheus)"
  # Alertmanager: the tests start their own instances (their configuration names their ports).
  export NW_TEST_ALERTMANAGER_BIN="$(command -v prometheus-alertmanager || command -v alertmanager)"
  export NW_TEST_AMTOOL="$(command -v amtool)"
}

# InfluxDB 1.x in its own directories; tests create their own databases.
start_influxdb() {
  local port rpc; port=$(free_port); rpc=$(free_port)
  local dir="$NW_TMP/influxdb"
  mkdir -p "$dir"
  cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
  influxd -config "$dir/influxdb.conf" >"$NW_TMP/influxdb.log" 2>&1 &
  NW_PIDS+=($!)
  wait_http influxdb "http://127.0.0.1:$port/ping" "$NW_TMP/influxdb.log"
  export NW_TEST_INFLUXDB_URL="http://127.0.0.1:$port"
}

start_pushgateway() {
  local port; port=$(free_port)
  prometheus-pushgateway --web.listen-address="127.0.0.1:$port" >"$NW_TMP/pushgateway.log" 2>&1 &
  NW_PIDS+=($!)
  wait_http pushgateway "http://127.0.0.1:$port/-/ready" "$NW_TMP/pushgateway.log"
  export NW_TEST_PUSHGATEWAY_URL="http://127.0.0.1:$port"
  export NW_TEST_PUSHGATEWAY_BIN="$(command -v prometheus-pushgateway)"
}

# MariaDB in its own data directory. Tests get a URL with a user that may create databases, and
# the binaries, so that an outage test can run (and stop) a private server of its own.
start_mariadb() {
  local port; port=$(free_port)
  local dir="$NW_TMP/mariadb"
  mkdir -p "$dir/data"
  mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
    --auth-root-authentication-method=socket >"$NW_TMP/mariadb-install.log" 2>&1 || {
      cat "$NW_TMP/mariadb-install.log" >&2; return 1; }
  mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysql.sock" --port="$port" \
    --bind-address=127.0.0.1 --user="$(id -un)" --pid-file="$dir/mariadb.pid" \
    --log-error="$NW_TMP/mariadb.log" &
  NW_PIDS+=($!)
  for _ in $(seq 1 600); do
    mariadb --no-defaults -S "$dir/mysql.sock" -u root -e "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb --no-defaults -S "$dir/mysql.sock" -u root -e \
    "CREATE USER 'nodewarden'@'127.0.0.1' IDENTIFIED BY 'nodewarden'; GRANT ALL ON *.* TO 'nodewarden'@'127.0.0.1';" \
    || { tail -n 30 "$NW_TMP/mariadb.log" >&2; return 1; }
  export NW_TEST_MYSQL_URL="mysql://nodewarden:nodewarden@127.0.0.1:$port"
  export NW_TEST_MARIADBD="$(command -v mariadbd)"
  export NW_TEST_MARIADB_INSTALL_DB="$(command -v mariadb-install-db)"
}

# A real OpenSSH server for the SSH fallback tests: its own host key, a client key pair, key
# authentication only. The tests write the controller key's forced-command line into
# $NW_TEST_SSH_AUTHORIZED_KEYS (sshd reads it at each login, so a test may rewrite it).
start_sshd() {
  local port; port=$(free_port)
  local dir="$NW_TMP/sshd"
  mkdir -p "$dir"
  ssh-keygen -q -t ed25519 -N '' -C nodewarden-test-host -f "$dir/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C nodewarden-test-controller -f "$dir/client_ed25519"
  : >"$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys"
  cat >"$dir/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding no
X11Forwarding no
LogLevel VERBOSE
CFG
  # OpenSSH 9.8+ penalises sources with failed logins; the refusal tests fail logins on purpose.
  if /usr/sbin/sshd -t -f "$dir/sshd_config" -o PerSourcePenalties=no 2>/dev/null; then
    echo "PerSourcePenalties no" >>"$dir/sshd_config"
  fi
  # The privilege-separation directory sshd insists on.
  mkdir -p /run/sshd 2>/dev/null || sudo mkdir -p /run/sshd
  /usr/sbin/sshd -D -e -f "$dir/sshd_config" >"$NW_TMP/sshd.log" 2>&1 &
  NW_PIDS+=($!)
  local up=""
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "!! sshd did not come up on 127.0.0.1:$port; its log:" >&2
    tail -n 30 "$NW_TMP/sshd.log" >&2
    return 1
  fi
  export NW_TEST_SSHD_PORT="$port"
  export NW_TEST_SSHD_HOST_KEY_PUB="$dir/host_ed25519.pub"
  export NW_TEST_SSH_CLIENT_KEY="$dir/client_ed25519"
  export NW_TEST_SSH_AUTHORIZED_KEYS="$dir/authorized_keys"
  export NW_TEST_SSH_USER="$(id -un)"
  export NW_TEST_SSHD_LOG="$NW_TMP/sshd.log"
}

# ChromeDriver for the web console's browser test (tests/console.rs), which launches headless
# Chromium through it with its own flags and a fresh profile directory.
start_chromedriver() {
  local port; port=$(free_port)
  # Without --allowed-ips it listens on loopback only.
  chromedriver --port="$port" >"$NW_TMP/chromedriver.log" 2>&1 &
  NW_PIDS+=($!)
  wait_http chromedriver "http://127.0.0.1:$port/status" "$NW_TMP/chromedriver.log"
  export NW_TEST_CHROMEDRIVER_URL="http://127.0.0.1:$port"
  export NW_TEST_CHROMIUM="$(command -v chromium)"
}

start_services() {
  NW_TMP=$(mktemp -d /tmp/nodewarden-test.XXXXXX)
  export NW_TMP
  trap nw_stop_services EXIT
  start_node_exporter
  start_prometheus
  start_pushgateway
  start_mariadb
  start_influxdb
  start_sshd
  start_chromedriver
  export NW_REQUIRE_SERVICES=1
  echo "== services up in $NW_TMP"
}
