#!/usr/bin/env bash
# CPU per job per tier, for the capacity model of README "Several API nodes": one runbox node
# in cluster mode (rate limits on, counted in Redis), a Redis of its own, the machine's engine.
# Sends one-shot python runs, then runs in sessions, from a client of its own (its CPU kept
# apart) and reads what each tier spent: the runbox process, redis-server, and the rest of
# the machine (the engine: dockerd, containerd, the shims, runc and the sandboxes' programs).
#
#   scripts/tiers.sh [RUNS] [CONCURRENCY]      (default 300 runs, concurrency 4)
#
# Needs a release build with the images built (`scripts/setup.sh serve` does both) and
# redis-server. Starts and stops only its own processes, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
concurrency=${2:-4}
binary=target/release/runbox
[ -x "$binary" ] || { echo "tiers.sh: build first: cargo build --release" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "tiers.sh: redis-server is not installed" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
node_port=$(free_port)
second_port=$(free_port)
work=$(mktemp -d)
cleanup() {
  [ -n "${node_pid:-}" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
  [ -n "${second_pid:-}" ] && kill "$second_pid" 2>/dev/null && wait "$second_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >/dev/null &
redis_pid=$!
# A node of the cluster on $1, logging to $2 (the second node only serves the hop's figure).
node() {
  RUNBOX_LISTEN=127.0.0.1:$1 \
    RUNBOX_CLUSTER__REDIS="\"redis://127.0.0.1:$redis_port/\"" \
    RUNBOX_CLUSTER__INTERNAL_TOKEN='"tiers-measurement-secret"' \
    RUNBOX_RATE_LIMIT__RULES='{runs = {routes = ["POST /run", "POST /sessions/{id}/run"], requests = 1000000, window_secs = 60}}' \
    RUNBOX_SESSIONS__OWNER="tiers-$$" RUNBOX_SESSIONS__KEEP_ON_SHUTDOWN=false \
    "$binary" serve >"$2" 2>&1 &
}
node "$node_port" "$work/node.log"
node_pid=$!
node "$second_port" "$work/second.log"
second_pid=$!
for port in "$node_port" "$second_port"; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "tiers.sh: a node did not come up" >&2; cat "$work"/*.log >&2; exit 1; }
done

python3 - "$node_port" "$node_pid" "$redis_pid" "$redis_port" "$runs" "$concurrency" "$second_port" <<'EOF'
import http.client, json, os, subprocess, sys, threading, time

port, node_pid, redis_pid, redis_port, runs, concurrency, second_port = sys.argv[1:]
runs, concurrency = int(runs), int(concurrency)
tick = os.sysconf("SC_CLK_TCK")

def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

def machine_busy():
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / tick  # all but idle and iowait

def redis_calls():
    info = subprocess.run(["redis-cli", "-p", redis_port, "INFO", "commandstats"],
                          capture_output=True, text=True, check=True).stdout
    return sum(int(line.split("calls=")[1].split(",")[0]) for line in info.splitlines()
               if line.startswith("cmdstat_") and not line.startswith("cmdstat_info"))

def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read() or b"null")
    return response.status, answer

def measure(name, paths):
    errors = []
    def worker(mine):
        conn = http.client.HTTPConnection("127.0.0.1", int(port))
        for path in mine:
            status, answer = post(conn, path, {"language": "python", "code": "print('hello')"})
            if status != 200 or answer.get("stdout") != "hello\n":
                errors.append((status, answer))
    chunks = [paths[i::concurrency] for i in range(concurrency)]
    before = (proc_cpu(node_pid), proc_cpu(redis_pid), machine_busy(), redis_calls(), os.times())
    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.monotonic() - started
    after = (proc_cpu(node_pid), proc_cpu(redis_pid), machine_busy(), redis_calls(), os.times())
    client = (after[4].user + after[4].system) - (before[4].user + before[4].system)
    node, redis = after[0] - before[0], after[1] - before[1]
    machine = after[2] - before[2]
    engine = machine - node - redis - client
    calls = after[3] - before[3]
    n = len(paths)
    print(f"{name}: {n} runs at concurrency {concurrency} in {wall:.1f} s ({n / wall:.1f} runs/s), {len(errors)} errors")
    print(f"  CPU per job: runbox node {1000 * node / n:.1f} ms, Redis {1000 * redis / n:.2f} ms ({calls / n:.1f} commands), engine and sandboxes {1000 * engine / n:.1f} ms (client {1000 * client / n:.1f} ms, not counted)")
    cores = os.cpu_count()
    tiers = {"runbox node": node, "Redis": redis, "engine": engine}
    for tier, spent in tiers.items():
        per_job = 1000 * max(spent, 1e-9) / n
        print(f"  {tier}: one core carries {1000 / per_job:.0f} runs/s; this machine's {cores} cores {cores * 1000 / per_job:.0f} runs/s")
    if errors:
        print("  first error:", errors[0])
    return errors

# Warm-up (the pool fills, the scripts load).
measure("warm-up", ["/run"] * 20)
failed = measure("one-shot runs", ["/run"] * runs)
conn = http.client.HTTPConnection("127.0.0.1", int(port))
ids = []
for _ in range(concurrency):
    status, answer = post(conn, "/sessions", {"language": "python"})
    assert status == 201, answer
    ids.append(answer["id"])
failed += measure("session runs", [f"/sessions/{ids[i % len(ids)]}/run" for i in range(runs)])
# The hop: a session's run and its GET (no sandbox work: the hop alone) at its host, then
# through the other node, interleaved so that drift falls on both alike.
def timed(conn, method, path, body=None):
    started = time.monotonic()
    conn.request(method, path, json.dumps(body) if body else None, {"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
    return 1000 * (time.monotonic() - started)
host_conn = http.client.HTTPConnection("127.0.0.1", int(port))
hop_conn = http.client.HTTPConnection("127.0.0.1", int(second_port))
run_body = {"language": "python", "code": "print('hello')"}
samples = {"run here": [], "run hop": [], "get here": [], "get hop": []}
for _ in range(100):
    samples["run here"].append(timed(host_conn, "POST", f"/sessions/{ids[0]}/run", run_body))
    samples["run hop"].append(timed(hop_conn, "POST", f"/sessions/{ids[0]}/run", run_body))
    samples["get here"].append(timed(host_conn, "GET", f"/sessions/{ids[0]}"))
    samples["get hop"].append(timed(hop_conn, "GET", f"/sessions/{ids[0]}"))
p50 = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
print(f"a session's run, p50 of 100 interleaved: at its host {p50['run here']:.1f} ms, through another node {p50['run hop']:.1f} ms")
print(f"its GET (the hop alone), p50 of 100: at its host {p50['get here']:.2f} ms, through another node {p50['get hop']:.2f} ms (the hop: {p50['get hop'] - p50['get here']:+.2f} ms)")
for id in ids:
    # A fresh connection: the one above may have idled out during the measurement.
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    conn.request("DELETE", f"/sessions/{id}")
    assert conn.getresponse().status == 204
sys.exit(1 if failed else 0)
EOF
