#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each one
# for FUZZ_SECONDS (default 30) from its seed corpus in tests/fuzz/corpus/
# (and its dictionary tests/fuzz/<name>.dict, if any).
# New inputs go to build-fuzz/corpus/<target>/, crashes to build-fuzz/.
#   tools/fuzz.sh [target ...]      (default: every fuzz_* target)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DMPX_SANITIZE=fuzzer \
  -DMPX_BUILD_BENCH=OFF -DMPX_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in build-fuzz/tests/fuzz/fuzz_*; do targets+=("$(basename "$f")"); done
fi
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  mkdir -p "build-fuzz/corpus/$name"
  # A target's dictionary, when it has one: tests/fuzz/<name>.dict.
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="../tests/fuzz/$name.dict")
  echo "fuzz: $t for ${secs}s"
  (cd build-fuzz && "./tests/fuzz/$t" -max_total_time="$secs" -timeout=10 \
     -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 ${dict[@]+"${dict[@]}"} \
     "corpus/$name" "../tests/fuzz/corpus/$name" 2>&1 | tail -n 12)
done
