#!/usr/bin/env bash
# Tests of terraform/: the provider-free topology module with `terraform test`
# (or `tofu test`), every example's rendered node config through
# `iris check-config`, offline checks of the AWS modules (which need a
# provider that cannot be downloaded here), and the alert rules with
# `promtool test rules`. Installs what it needs when it can (Debian's
# prometheus for promtool); a part that cannot run is reported SKIPPED by
# name, never counted as passed. Exit status 1 if any part failed.
#
#   terraform/test.sh                 # everything
#   IRIS_BIN=path/to/iris terraform/test.sh
#   TF=tofu terraform/test.sh         # OpenTofu instead of Terraform
#   TF_PLANET_5B=0 terraform/test.sh  # skip rendering the 5-billion-user planet (14,050 configs)
#   TF_SMOKE=0 terraform/test.sh      # skip starting a rendered region on Kafka and Redis
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/iris-tf-test.XXXXXX")
SMOKE_PIDS=()
cleanup() {
  for p in "${SMOKE_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -d "$WORK/smoke/kafka" ] && "$ROOT/scripts/kafka" stop "$WORK/smoke/kafka" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
PASSED=()
FAILED=()
SKIPPED=()
pass() { PASSED+=("$1"); echo "PASS $1"; }
fail() { FAILED+=("$1"); echo "FAIL $1"; }
skip() { SKIPPED+=("$1 ($2)"); echo "SKIPPED $1: $2"; }

# --- tools ------------------------------------------------------------------
# An empty CLI config: no provider installation, no warnings about ~/.terraformrc.
: > "$WORK/cli.tfrc"
export TF_CLI_CONFIG_FILE="$WORK/cli.tfrc"
export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

TOFU_VERSION=1.8.8
TOFU_CACHE="${IRIS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/iris}/tofu-$TOFU_VERSION"
find_tf() {
  if [ -n "${TF:-}" ] && command -v "$TF" >/dev/null; then command -v "$TF"; return; fi
  for t in terraform tofu "$TOFU_CACHE/tofu"; do
    if command -v "$t" >/dev/null 2>&1; then command -v "$t"; return; fi
  done
  # Neither is installed: build OpenTofu from its Go module. `go install
  # ...@version` refuses it (its go.mod has replace directives), so build in
  # the downloaded module's own directory. Cached outside the clone.
  if command -v go >/dev/null; then
    echo "building OpenTofu $TOFU_VERSION from the Go module proxy (no terraform or tofu found)" >&2
    local dir
    if dir=$(cd "$WORK" && go mod download -json "github.com/opentofu/opentofu@v$TOFU_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') &&
      (cd "$dir" && go build -o "$TOFU_CACHE/tofu" ./cmd/tofu) >&2; then
      echo "$TOFU_CACHE/tofu"; return
    fi
  fi
}
TFBIN=$(find_tf)

find_iris() {
  for b in "${IRIS_BIN:-}" "${CARGO_TARGET_DIR:-}/release/iris" "${CARGO_TARGET_DIR:-}/debug/iris" \
    "$ROOT/target/release/iris" "$ROOT/target/debug/iris" \
    /var/tmp/iris-ci-target/release/iris /var/tmp/iris-ci-target/debug/iris; do
    if [ -n "$b" ] && [ -x "$b" ] && [ -f "$b" ]; then echo "$b"; return; fi
  done
  if command -v cargo >/dev/null; then
    echo "building iris (cargo build -p iris-node --bin iris)" >&2
    (cd "$ROOT" && if command -v flock >/dev/null; then flock /tmp/iris-cargo.lock cargo build -q -p iris-node --bin iris; else cargo build -q -p iris-node --bin iris; fi) >&2 &&
      echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/iris"
  fi
}

find_promtool() {
  if command -v promtool >/dev/null; then command -v promtool; return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's prometheus for promtool" >&2
    (apt-get install -y --no-install-recommends prometheus || { apt-get update && apt-get install -y --no-install-recommends prometheus; }) >&2 </dev/null
    command -v promtool
  fi
}

# --- the measured figures ----------------------------------------------------
if python3 "$HERE/scripts/capacity.py" --check; then pass "capacity.json matches bench/results"; else fail "capacity.json matches bench/results"; fi

if [ -z "$TFBIN" ]; then
  for t in "fmt" "region-topology terraform test" "examples render" "check-config of rendered configs" "smoke: rendered region chats" "aws templates render"; do
    skip "$t" "neither terraform nor tofu is installed, and OpenTofu could not be built"
  done
else
  echo "using $("$TFBIN" version | head -1)"

  # --- formatting -----------------------------------------------------------
  if "$TFBIN" fmt -check -recursive -diff "$HERE"; then pass "fmt -check -recursive"; else fail "fmt -check -recursive"; fi

  # --- provider-free modules: terraform test --------------------------------
  for m in "$HERE"/modules/*/; do
    name=$(basename "$m")
    if grep -q required_providers "$m"/*.tf; then continue; fi
    export TF_DATA_DIR="$WORK/data-$name"
    if "$TFBIN" -chdir="$m" init -backend=false -input=false >"$WORK/init-$name.log" 2>&1 &&
      "$TFBIN" -chdir="$m" test -no-color 2>&1 | tee "$WORK/test-$name.log" | grep -E '^(tests/|  run |Success|Failure|Error)' ; then
      if grep -q '^Success!' "$WORK/test-$name.log"; then
        pass "$name: $(grep '^Success!' "$WORK/test-$name.log")"
      else
        fail "$name terraform test"
      fi
    else
      cat "$WORK/init-$name.log" "$WORK/test-$name.log" 2>/dev/null | tail -40
      fail "$name terraform test"
    fi
    unset TF_DATA_DIR
  done

  # --- the examples: render each topology and check every node config -------
  IRIS=$(find_iris)
  export TF_DATA_DIR="$WORK/data-render"
  "$TFBIN" -chdir="$HERE/tests/render" init -backend=false -input=false >"$WORK/init-render.log" 2>&1 || { cat "$WORK/init-render.log"; fail "render harness init"; }
  for ex in "$HERE"/examples/*/; do
    exname=$(basename "$ex")
    if cmp -s "$ex/topology_variables.tf" "$HERE/tests/render/variables.tf"; then
      pass "$exname: topology variables are the render harness's"
    else
      fail "$exname: topology_variables.tf differs from tests/render/variables.tf"
    fi
    for tfvars in "$ex"/topology*.tfvars; do
      label="$exname/$(basename "$tfvars")"
      if [ "$(basename "$tfvars")" = topology-5b.tfvars ] && [ "${TF_PLANET_5B:-1}" = 0 ]; then
        skip "$label" "TF_PLANET_5B=0"
        continue
      fi
      out="$WORK/out-$exname-$(basename "$tfvars" .tfvars)"
      mkdir -p "$out/configs"
      if ! "$TFBIN" -chdir="$HERE/tests/render" apply -auto-approve -input=false -no-color \
        -state="$out/state.tfstate" -var-file="$tfvars" >"$out/apply.log" 2>&1; then
        tail -30 "$out/apply.log"
        fail "$label renders"
        continue
      fi
      "$TFBIN" -chdir="$HERE/tests/render" output -state="$out/state.tfstate" -json >"$out/outputs.json"
      python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
o = json.load(open(os.path.join(out, "outputs.json")))
for key, toml in o["node_configs"]["value"].items():
    region, node = key.split("/")
    with open(os.path.join(out, "configs", f"{region}__{node}.toml"), "w") as f:
        f.write(toml)
t = o["totals"]["value"]
print(f"  {len(o['regions']['value'])} regions, {len(o['node_configs']['value'])} Iris node configs; nodes in all: {t['nodes']} "
      f"(edges {t['edges']}, cores {t['cores']}, relays {t['relays']}, brokers {t['kafka_brokers']}+{t['global_kafka_brokers']} global, "
      f"ScyllaDB {t['scylla_nodes']}, Redis {t['redis_nodes']})")
PY
      pass "$label renders"
      if [ -z "$IRIS" ]; then
        skip "$label check-config" "no iris binary (set IRIS_BIN, or install cargo)"
        continue
      fi
      n=$(find "$out/configs" -name '*.toml' | wc -l)
      # Each file through `iris check-config`; a failure prints the file and why.
      if find "$out/configs" -name '*.toml' -print0 | xargs -0 -P 2 -n 50 sh -c '
          for f in "$@"; do "'"$IRIS"'" check-config "$f" >/dev/null 2>"$f.err" || { echo "$f: $(cat "$f.err")"; exit 1; }; done' sh; then
        pass "$label: $n configs pass iris check-config"
      else
        fail "$label: iris check-config"
      fi
    done
  done
  unset TF_DATA_DIR

  # The checker itself must refuse a bad config, or the check above proves nothing.
  if [ -n "$IRIS" ]; then
    sample=$(find "$WORK"/out-one-region-topology/configs -name '*core-001.toml' | head -1)
    if [ -n "$sample" ]; then
      sed 's/^shards = .*/shards = 5000/' "$sample" >"$WORK/bad.toml"
      if "$IRIS" check-config "$WORK/bad.toml" >/dev/null 2>&1; then
        fail "iris check-config refuses shards = 5000"
      else
        pass "iris check-config refuses shards = 5000"
      fi
    fi
  fi

  # --- a rendered tiny region runs: Apache Kafka, Redis, one core, one edge --
  # The configs are the module's, with only what one machine needs changed:
  # each 0.0.0.0 listener becomes a free loopback port and data_dir a
  # directory of the test's. Then iris-bench chats through the edge.
  smoke() {
    local d="$WORK/smoke" bench kafka rport
    bench="$(dirname "$IRIS")/iris-bench"
    [ -x "$bench" ] || { skip "smoke: rendered region chats" "no iris-bench beside $IRIS"; return; }
    command -v redis-server >/dev/null || { skip "smoke: rendered region chats" "redis-server not installed"; return; }
    command -v java >/dev/null || { skip "smoke: rendered region chats" "java not installed (Apache Kafka)"; return; }
    mkdir -p "$d"
    rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$d/redis.log" 2>&1 &
    SMOKE_PIDS+=($!)
    if ! kafka=$("$ROOT/scripts/kafka" start "$d/kafka" --owner $$ 2>"$d/kafka.err" | tail -n 1) || [ -z "$kafka" ]; then
      tail -5 "$d/kafka.err"; skip "smoke: rendered region chats" "Apache Kafka did not start (scripts/kafka)"; return
    fi
    "$IRIS" token --user x --tenant x --data-dir "$d/key" >/dev/null 2>&1
    python3 - "$d" "$kafka" "$rport" <<'PY'
import json, sys
d, kafka, rport = sys.argv[1:]
json.dump({
    "users": 200, "peak_msgs_per_second": 2,
    "regions": {"smoke": {"home_share": 1, "zones": ["a"], "kafka": kafka, "redis_url": f"redis://127.0.0.1:{rport}"}},
    "auth": {"hs256_secret_file": f"{d}/key/auth/dev-hs256.key"},
}, open(f"{d}/smoke.tfvars.json", "w"))
PY
    TF_DATA_DIR="$WORK/data-render" "$TFBIN" -chdir="$HERE/tests/render" apply -auto-approve -input=false -no-color \
      -state="$d/state.tfstate" -var-file="$d/smoke.tfvars.json" >"$d/apply.log" 2>&1 || { tail -20 "$d/apply.log"; fail "smoke: render"; return; }
    TF_DATA_DIR="$WORK/data-render" "$TFBIN" -chdir="$HERE/tests/render" output -state="$d/state.tfstate" -json node_configs >"$d/configs.json"
    python3 - "$d" <<'PY'
import json, re, socket, sys
d = sys.argv[1]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
configs = json.load(open(f"{d}/configs.json"))
for key, toml in configs.items():
    node = key.split("/")[1]
    ws = None
    def sub(m):
        global ws
        p = free()
        if m.group(1) == "ws": ws = p
        return f'{m.group(1)} = "127.0.0.1:{p}"'
    toml = re.sub(r'^(\w+) = "0\.0\.0\.0:\d+"', sub, toml, flags=re.M)
    toml = re.sub(r'^data_dir = .*$', f'data_dir = "{d}/{node}"', toml, flags=re.M)
    open(f"{d}/{node}.toml", "w").write(toml)
    if ws: open(f"{d}/{node}.ws", "w").write(str(ws))
PY
    local n=0 url=""
    for f in "$d"/core-*.toml "$d"/edge-*.toml; do
      IRIS_LOG=warn "$IRIS" --config "$f" >"${f%.toml}.log" 2>&1 &
      SMOKE_PIDS+=($!)
      n=$((n + 1))
    done
    for w in "$d"/edge-*.ws; do url="${url:+$url,}ws://127.0.0.1:$(cat "$w")/v1/ws"; done
    # Until the region serves (the core owns its shards, the edge reads its topic).
    local ok=""
    for _ in $(seq 1 60); do
      if timeout 30 "$bench" chat --system iris --url "$url" --data-dir "$d/key" --users 2 --rate 20 --seconds 1 >/dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    if [ -z "$ok" ]; then
      tail -n 5 "$d"/*.log; fail "smoke: rendered region serves"; return
    fi
    if timeout 60 "$bench" chat --system iris --url "$url" --data-dir "$d/key" --users 20 --rate 200 --seconds 3 >"$d/chat.json" 2>"$d/chat.err" &&
      python3 - "$d/chat.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  chat through the rendered region: sent {r['sent']}, accepted {r['accepted']}, delivered {r['delivered']}, errors {r['errors']}")
sys.exit(0 if r["sent"] > 0 and r["accepted"] == r["sent"] and r["delivered"] == r["sent"] and r["errors"] == 0 else 1)
PY
    then
      pass "smoke: a rendered region ($n nodes on Apache Kafka and Redis) chats, nothing lost"
    else
      tail -n 3 "$d/chat.err"; fail "smoke: rendered region chats"
    fi
  }
  if [ "${TF_SMOKE:-1}" = 0 ]; then
    skip "smoke: rendered region chats" "TF_SMOKE=0"
  elif [ -z "$IRIS" ]; then
    skip "smoke: rendered region chats" "no iris binary"
  else
    smoke
  fi

  # --- the AWS modules: what can be checked without the provider ------------
  if python3 "$HERE/scripts/refcheck.py" "$HERE"/modules/aws-region "$HERE"/modules/federation "$HERE"/examples/*/; then
    pass "aws modules and examples: every referenced name is declared"
  else
    fail "aws modules and examples: undeclared names"
  fi
  export TF_DATA_DIR="$WORK/data-templates"
  if "$TFBIN" -chdir="$HERE/tests/templates" init -backend=false -input=false >/dev/null 2>&1 &&
    "$TFBIN" -chdir="$HERE/tests/templates" apply -auto-approve -input=false -no-color -state="$WORK/templates.tfstate" >"$WORK/templates.log" 2>&1; then
    "$TFBIN" -chdir="$HERE/tests/templates" output -state="$WORK/templates.tfstate" -raw bootstrap_sh >"$WORK/bootstrap.sh"
    "$TFBIN" -chdir="$HERE/tests/templates" output -state="$WORK/templates.tfstate" -raw prometheus_yml >"$WORK/prometheus.yml"
    if bash -n "$WORK/bootstrap.sh"; then pass "aws-region boot script renders and parses (bash -n)"; else fail "aws-region boot script: bash -n"; fi
  else
    cat "$WORK/templates.log"
    fail "aws-region templates render"
  fi
  unset TF_DATA_DIR
  for m in aws-region federation; do
    skip "$m terraform validate/plan" "the AWS provider cannot be downloaded here"
  done
fi

# --- dashboards and alerts ---------------------------------------------------
if python3 - "$ROOT" "$HERE/dashboards" <<'PY'; then pass "dashboard and alerts name only metrics the code exports"; else fail "dashboard and alerts metric names"; fi
import json, re, sys, pathlib
root, dash = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
exported = set()
for p in root.rglob("*.rs"):
    if "target" in p.parts:
        continue
    exported |= set(re.findall(r'"(iris_[a-z_]+)"', p.read_text(errors="replace")))
d = json.load(open(dash / "iris-region.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
exprs += re.findall(r"expr:\s*(.+)", (dash / "iris-alerts.yml").read_text())
used = set()
for e in exprs:
    used |= set(re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\b(iris_[a-z_]+)\b(?!\s*[=!~])", e))
missing = sorted(used - exported)
print(f"  {len(used)} iris_ metrics used, {len(exported)} exported by the code")
if missing:
    print("  not exported by any Rust code:", ", ".join(missing))
    sys.exit(1)
PY

PROMTOOL=$(find_promtool)
if [ -z "$PROMTOOL" ]; then
  skip "promtool check rules" "promtool missing and Debian's prometheus could not be installed"
  skip "promtool test rules" "promtool missing"
  skip "prometheus.yml check config" "promtool missing"
else
  if "$PROMTOOL" check rules "$HERE/dashboards/iris-alerts.yml"; then pass "promtool check rules"; else fail "promtool check rules"; fi
  if (cd "$HERE/dashboards/tests" && "$PROMTOOL" test rules iris-alerts.test.yml); then pass "promtool test rules"; else fail "promtool test rules"; fi
  if [ -s "$WORK/prometheus.yml" ]; then
    sed "s#/etc/prometheus/iris-alerts.yml#$HERE/dashboards/iris-alerts.yml#" "$WORK/prometheus.yml" >"$WORK/prometheus-check.yml"
    if "$PROMTOOL" check config "$WORK/prometheus-check.yml"; then pass "aws-region prometheus.yml (promtool check config)"; else fail "aws-region prometheus.yml"; fi
  fi
fi

echo
echo "terraform/test.sh: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
for s in "${SKIPPED[@]}"; do echo "  SKIPPED: $s"; done
for f in "${FAILED[@]}"; do echo "  FAILED: $f"; done
[ ${#FAILED[@]} -eq 0 ]
