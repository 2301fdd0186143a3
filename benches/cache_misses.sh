#!/usr/bin/env bash
# Cache misses per operation of the timing-wheel benchmark at 1 M pending leases, visq against
# the lock-based reference (BinaryHeap), from valgrind's cache simulator; writes
# results/cache-misses.md. Needs valgrind (apt-get install valgrind). Takes about a minute.
#
#   bash benches/cache_misses.sh            # last-level cache simulated at 2 MiB
#   LL=4194304,16,64 bash benches/cache_misses.sh
#
# The simulated last level is this machine's L2 per core (2 MiB) by default, not its L3: what
# misses it is what a core fetches from farther away. Runs under `env -i`, so the counts do not
# depend on the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
pending=1000000
ops=100000
ll="${LL:-2097152,16,64}"
cargo build --release --example cache_misses >&2
bin=target/release/examples/cache_misses
out=target/cache-misses
mkdir -p "$out"

# Prints "Ir D1 LL" (instructions, D1 misses, LL misses) of one cachegrind run.
run() {
    env -i PATH=/usr/bin:/bin valgrind --tool=cachegrind --cache-sim=yes --LL="$ll" \
        --cachegrind-out-file="$out/cg.out" "$bin" "$@" 2> "$out/valgrind.log"
    awk '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
         /^summary:/ { for (i = 2; i <= NF; i++) v[name[i]] = $i
                       print v["Ir"], v["D1mr"] + v["D1mw"], v["DLmr"] + v["DLmw"] }' "$out/cg.out"
}

{
    echo "# Cache misses per operation, timing wheel at 1 M pending"
    echo
    echo "Written by \`bash benches/cache_misses.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), valgrind's cache"
    echo "simulator: D1 as this machine's, last level simulated at ${ll%%,*} bytes. Each figure is"
    echo "(run with $ops operations − run with 0) ÷ $ops, after the same fixture (the wheel"
    echo "benchmark's, \`benches/common/wheel.rs\`: $pending leases in flight, deadlines spread over"
    echo "30 s) and 1024 warm-up operations. *expiry* includes re-leasing each expired message,"
    echo "as the fixture does (untimed in the benchmark); *change_visibility* sets a random"
    echo "timeout of 1 ms..60 s on a random lease. Exact counts: they do not move between runs."
    echo
    echo "| operation | queue | instructions | D1 misses | last-level misses |"
    echo "|---|---|---|---|---|"
    for op in lease expire change; do
        for queue in visq lockref; do
            read -r i0 d0 l0 < <(run "$queue" "$op" "$pending" 0)
            read -r i1 d1 l1 < <(run "$queue" "$op" "$pending" "$ops")
            awk -v op="$op" -v q="$queue" -v n="$ops" -v i0="$i0" -v i1="$i1" -v d0="$d0" \
                -v d1="$d1" -v l0="$l0" -v l1="$l1" 'BEGIN {
                    name = (q == "visq") ? "visq" : "lock-based ref"
                    printf "| %s | %s | %.1f | %.2f | %.2f |\n", op, name, (i1 - i0) / n,
                        (d1 - d0) / n, (l1 - l0) / n }'
        done
    done
} > results/cache-misses.md
echo "wrote results/cache-misses.md" >&2
