#!/usr/bin/env bash
# Extra Docker engines beside the machine's own, for the cluster suite (README, "Running
# several machines"): `scripts/engines.sh start` prints the engines as the value of
# RUNBOX_CLUSTER__ENGINES; `scripts/engines.sh stop` stops them by pid and removes their data.
#
# - e1: in a network namespace of its own (a second dockerd in the host's namespace with
#   `--bridge=none` deletes the first engine's docker0), reached through its unix socket.
# - e2: in the host's namespace with a bridge of its own (so docker0 is left alone), reached
#   over TCP on 127.0.0.1 with mutual TLS (certificates made here by openssl).
# Sandboxes have no network in either. Both keep containers across a daemon restart
# (live-restore). Everything lives under /run/runbox-engines and /var/lib/runbox-engines.
set -euo pipefail

root_run=/run/runbox-engines
root_data=/var/lib/runbox-engines
tls_port=${RUNBOX_TEST_TLS_PORT:-23760}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'engines.sh: %s\n' "$*" >&2; exit 1; }

# Waits up to 60 s for the engine at $1 (a DOCKER_HOST value, plus TLS flags) to answer.
wait_for() {
  for _ in $(seq 1 120); do
    docker "$@" info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

make_certs() {
  local dir=$root_run/tls
  [ -f "$dir/client-key.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=runbox-test-ca \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
      -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile server.ext -out server.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=runbox \
      -keyout client-key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile client.ext -out client.pem 2>/dev/null
    chmod 0600 ./*-key.pem
  )
}

daemon_flags() {
  local name=$1
  mkdir -p "$root_run/$name" "$root_data/$name"
  printf -- '--data-root=%s --exec-root=%s --pidfile=%s --cgroup-parent=runbox-%s --iptables=false --ip-masq=false --live-restore --host=unix://%s' \
    "$root_data/$name" "$root_run/$name/exec" "$root_run/$name/docker.pid" "$name" \
    "$root_run/$name.sock"
}

start() {
  mkdir -p "$root_run"
  # e1: its own network namespace, kept by a bind mount.
  if ! docker -H "unix://$root_run/e1.sock" info >/dev/null 2>&1; then
    say "starting engine e1 (own network namespace, unix://$root_run/e1.sock)"
    [ -e "$root_run/e1.netns" ] || touch "$root_run/e1.netns"
    mountpoint -q "$root_run/e1.netns" || unshare --net="$root_run/e1.netns" true
    # shellcheck disable=SC2046
    nsenter --net="$root_run/e1.netns" sh -c 'ip link set lo up; exec "$@"' sh \
      dockerd $(daemon_flags e1) --bridge=none >"$root_run/e1.log" 2>&1 &
    wait_for -H "unix://$root_run/e1.sock" || fail "e1 did not come up; see $root_run/e1.log"
  fi
  # e2: the host's namespace, a bridge of its own, TLS on loopback.
  make_certs
  local tls=(--tlsverify --tlscacert="$root_run/tls/ca.pem" --tlscert="$root_run/tls/client.pem"
    --tlskey="$root_run/tls/client-key.pem" -H "tcp://127.0.0.1:$tls_port")
  if ! docker "${tls[@]}" info >/dev/null 2>&1; then
    say "starting engine e2 (own bridge, tcp://127.0.0.1:$tls_port with mutual TLS)"
    ip link show runbox-e2 >/dev/null 2>&1 || {
      ip link add runbox-e2 type bridge
      ip addr add 10.213.0.1/24 dev runbox-e2
      ip link set runbox-e2 up
    }
    # shellcheck disable=SC2046
    dockerd $(daemon_flags e2) --bridge=runbox-e2 \
      --tlsverify --tlscacert="$root_run/tls/ca.pem" --tlscert="$root_run/tls/server.pem" \
      --tlskey="$root_run/tls/server-key.pem" --host="tcp://127.0.0.1:$tls_port" \
      >"$root_run/e2.log" 2>&1 &
    wait_for "${tls[@]}" || fail "e2 did not come up; see $root_run/e2.log"
  fi
  printf '[{id="e1", host="unix://%s/e1.sock", cgroup_parent="runbox-e1"}, {id="e2", host="tcp://127.0.0.1:%s", tls_ca="%s/tls/ca.pem", tls_cert="%s/tls/client.pem", tls_key="%s/tls/client-key.pem", cgroup_parent="runbox-e2"}]\n' \
    "$root_run" "$tls_port" "$root_run" "$root_run" "$root_run"
}

stop() {
  for name in e1 e2; do
    # dockerd mounts its data root on itself; a daemon killed with -9 leaves that mount.
    local pidfile=$root_run/$name/docker.pid
    if [ ! -f "$pidfile" ]; then
      while mountpoint -q "$root_data/$name"; do umount "$root_data/$name"; done
      continue
    fi
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      # Its containers first (live-restore would keep them past the daemon).
      local host=(-H "unix://$root_run/$name.sock")
      [ "$name" = e2 ] && host=(--tlsverify --tlscacert="$root_run/tls/ca.pem"
        --tlscert="$root_run/tls/client.pem" --tlskey="$root_run/tls/client-key.pem"
        -H "tcp://127.0.0.1:$tls_port")
      docker "${host[@]}" ps -aq | xargs -r docker "${host[@]}" rm -f >/dev/null 2>&1 || true
      kill "$pid"
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
    while mountpoint -q "$root_data/$name"; do umount "$root_data/$name"; done
  done
  mountpoint -q "$root_run/e1.netns" && umount "$root_run/e1.netns"
  ip link show runbox-e2 >/dev/null 2>&1 && ip link delete runbox-e2
  if [ "${1:-}" = --purge ]; then
    rm -rf "$root_data" "$root_run"
  fi
}

# Pins an engine (its dockerd, its containerd and whatever they start from now on: affinity
# is inherited) to one CPU, for `runbox bench --ceiling-scaling` (two engines on two CPUs are
# two machines' worth of engine).
pin() {
  local name=${1:-} cpu=${2:-}
  [ -n "$name" ] && [ -n "$cpu" ] || fail "usage: scripts/engines.sh pin e1|e2 CPU"
  local pidfile=$root_run/$name/docker.pid
  [ -f "$pidfile" ] || fail "engine $name is not running"
  local pid
  pid=$(cat "$pidfile")
  for p in "$pid" $(pgrep -P "$pid"); do
    taskset -a -cp "$cpu" "$p" >/dev/null
  done
  say "engine $name (dockerd $pid and its children) pinned to CPU $cpu"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  pin) shift; pin "$@" ;;
  *) fail "usage: scripts/engines.sh start | stop [--purge] | pin ENGINE CPU" ;;
esac
