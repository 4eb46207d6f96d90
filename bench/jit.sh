# Sourced by the region benchmarks (bench/region, bench/region-hops): the
# brokers' JIT compiler. A fresh broker JVM compiles for tens of seconds
# under a new load, and on these machines its compiler threads take the CPU
# the broker needs: on 2026-12-06, a broker 15 s old spent 3.6 s of CPU in
# its C2 compiler during an 8 s run at 2,500 msgs/s (the data plane 4.5 s),
# and the region's delivered p99 was 0.4-3.3 s; after 40 s of load the
# compiler used 0.07 s, the broker 56 % of a core instead of 83-109 %, and
# p99 was 48 ms. A production broker is warm, so a measurement is taken once
# the compiler is quiet, and every result says how busy it was.

# jit_ticks PID...: utime + stime of the JIT compiler threads (C1, C2) of the
# JVMs PID..., in clock ticks.
jit_ticks() {
  local t=0 p d
  for p in "$@"; do
    for d in /proc/"$p"/task/*; do
      case "$(cat "$d/comm" 2>/dev/null)" in
        "C1 CompilerThre"* | "C2 CompilerThre"*)
          t=$((t + $(awk '{print $14 + $15}' "$d/stat" 2>/dev/null || echo 0))) ;;
      esac
    done
  done
  echo "$t"
}

# warm_jit MAX_SECONDS "PID..." CMD...: runs CMD (one pass of load, a few
# seconds long) again and again until the JIT compilers of the JVMs PID...
# used under 5 % of one core during a pass, or MAX_SECONDS have passed (then
# the measurement goes on, and its results show the compiler's share). Says
# on stderr what it did. MAX_SECONDS 0: no warm-up.
warm_jit() {
  local max=$1 jvms=$2; shift 2
  [ "$max" -gt 0 ] || return 0
  local hz start b a t0 t1 pct passes=0
  hz=$(getconf CLK_TCK); start=$(date +%s)
  while :; do
    b=$(jit_ticks $jvms); t0=$(date +%s.%N)
    "$@" > /dev/null 2>&1 || true
    a=$(jit_ticks $jvms); t1=$(date +%s.%N); passes=$((passes + 1))
    pct=$(awk -v a="$a" -v b="$b" -v hz="$hz" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "%.1f", 100 * (a - b) / hz / (t1 - t0) }')
    if awk -v p="$pct" 'BEGIN { exit !(p < 5) }'; then
      echo "warm-up: the brokers' JIT quiet ($pct % of a core in the last pass) after $passes passes, $(($(date +%s) - start)) s" >&2
      return 0
    fi
    if [ $(($(date +%s) - start)) -ge "$max" ]; then
      echo "warm-up: the brokers' JIT still at $pct % of a core after ${max} s; measuring anyway (results show its share)" >&2
      return 0
    fi
  done
}
