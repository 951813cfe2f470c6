#!/usr/bin/env bash
# Builds the fuzz driver (libFuzzer, stable toolchain) and runs targets for a
# bounded time each; exits non-zero if any target crashed (panic, abort,
# allocation cap, timeout). docs/testing.md.
#
#   fuzz/run.sh [-s SECONDS] [TARGET...]    default: every target, 120 s each
#
# FUZZ_SECONDS sets the default time. A crash leaves its input in
# $FUZZ_OUT/artifacts/<target>/ and the command that replays it on stderr.
set -euo pipefail
cd "$(dirname "$0")"

ALL=(resp wal snapshot snapshot-file replication admin commands)
seconds=${FUZZ_SECONDS:-120}
if [[ ${1:-} == -s ]]; then seconds=$2; shift 2; fi
targets=("$@")
((${#targets[@]})) || targets=("${ALL[@]}")

# The instrumented build has its own target directory (its RUSTFLAGS differ
# from the root's, so sharing one would rebuild both every time).
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-../target}/fuzz}
FUZZ_OUT=${FUZZ_OUT:-$CARGO_TARGET_DIR/out}
triple=$(rustc -vV | sed -n 's/^host: //p')
# rustc's SanitizerCoverage pass (a stable -C option) with the counters and
# tables libFuzzer reads; --target keeps build scripts uninstrumented.
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing"
# The fuzzed code builds with the root's dependency versions: its lock file
# is the root's, to which cargo adds the driver's own crates.
cp ../Cargo.lock Cargo.lock
cargo build --release --features libfuzzer --target "$triple" --bin tessera-fuzz
bin=$CARGO_TARGET_DIR/$triple/release/tessera-fuzz

failed=()
for t in "${targets[@]}"; do
  seeds=corpus/$t
  [[ -d $seeds ]] || { echo "no seed corpus $seeds (targets: ${ALL[*]})" >&2; exit 2; }
  work=$FUZZ_OUT/corpus/$t
  art=$FUZZ_OUT/artifacts/$t
  mkdir -p "$work" "$art"
  dict=()
  [[ -f dict/$t.dict ]] && dict=(-dict="dict/$t.dict")
  echo ">>> fuzz $t: ${seconds}s"
  # New inputs go to the work corpus (first directory); the checked-in seeds
  # are read only. -timeout: one input running 10 s counts as a crash.
  if TESSERA_FUZZ_TARGET=$t "$bin" "$work" "$seeds" "${dict[@]}" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3072 -max_len=65536 \
      -artifact_prefix="$art/" -print_final_stats=1 2>"$FUZZ_OUT/$t.log"; then
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' "$FUZZ_OUT/$t.log" | tr '\n' ' '
    grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$FUZZ_OUT/$t.log" | tail -1
  else
    echo ">>> fuzz $t FAILED: $FUZZ_OUT/$t.log" >&2
    grep -E 'panicked|ERROR|SUMMARY|allocation cap|Test unit written' "$FUZZ_OUT/$t.log" | head -20 >&2
    echo "replay: TESSERA_FUZZ_TARGET=$t $bin $art/<crash-file>" >&2
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo ">>> fuzz: crashes in ${failed[*]}" >&2
  exit 1
fi
echo ">>> fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
