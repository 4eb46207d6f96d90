"""Groups `perf report --sort sym` lines (stdin) by what the function
belongs to, so that a flat profile reads as "where the time goes"."""

import re
import sys

# First match wins; patterns are tried against the symbol text.
GROUPS = [
    ("kernel: network and syscalls", r"\[k\] .*(tcp|ip_|sock|skb|net_|loopback|__dev|entry_SYSCALL|syscall|epoll|ep_|sys_|do_sys|__x64)"),
    ("kernel: scheduling and futex", r"\[k\] .*(sched|futex|schedule|wake|finish_task|switch|pick_next|enqueue|dequeue|try_to_wake)"),
    ("kernel: other", r"\[k\] "),
    ("JSON (serde_json, protocol codec)", r"serde_json|serde::|iris_protocol|peek_json|decode_json|encode_json"),
    ("storage: memtable skiplist search (crossbeam_skiplist, key compares)", r"crossbeam_skiplist|byteview"),
    ("storage: other (fjall, lsm-tree, committer)", r"fjall|lsm_tree|iris_storage|committer|value_log|xxhash|crc|lz4"),
    ("libc memcmp (callers not sampled; the skiplist's key compares are the likely ones)", r"memcmp"),
    ("libc memcpy/memmove/memset", r"memcpy|memmove|memset"),
    ("memory allocation", r"malloc|free|realloc|_int_|alloc::|cfree|tcache"),
    ("tokio runtime and channels", r"tokio::|mio::|parking_lot|std::sync|futures_|AtomicWaker"),
    ("actix (shard actors)", r"actix"),
    ("hashing and maps", r"hashbrown|dashmap|siphash|ahash|Hash"),
    ("Iris edge and core logic", r"iris_"),
]


def main():
    totals = {}
    other = 0.0
    others = []
    for line in sys.stdin:
        m = re.match(r"\s*([0-9.]+)%\s+(.*)$", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        for name, pattern in GROUPS:
            if re.search(pattern, sym):
                totals[name] = totals.get(name, 0.0) + pct
                break
        else:
            other += pct
            others.append((pct, sym.strip()))
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{pct:6.1f}%  {name}")
    print(f"{other:6.1f}%  other, largest:")
    for pct, sym in sorted(others, reverse=True)[:8]:
        print(f"        {pct:5.2f}%  {sym[:110]}")


if __name__ == "__main__":
    main()
