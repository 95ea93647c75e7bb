#!/usr/bin/env bash
# Builds fpn's fuzz targets (tests/fuzz/fuzz_*.cpp) with Clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer in their own build directory, then fuzzes each for a bounded time,
# starting from a temporary copy of its committed corpus (tests/fuzz/corpus/<name>/, never
# modified). Any crash, sanitizer report, leak, timeout or out-of-memory fails the run; the input
# that caused it is kept in <build dir>/artifacts/<name>/ and its path printed.
#
#   tools/run_fuzzers.sh [target names...]        (default: every tests/fuzz/fuzz_<name>.cpp)
#
# Environment:
#   FPN_FUZZ_SECONDS    fuzzing time per target, in seconds               (default: 60)
#   FPN_FUZZ_SEED       libFuzzer's random seed; 0 draws a new one        (default: 0)
#   FPN_FUZZ_BUILD_DIR  build directory, relative to the repository root  (default: build-fuzz)
#   FPN_FUZZ_CXX        the Clang C++ compiler                            (default: clang++)
#   FPN_JOBS            parallel build jobs                               (default: 2)
#
# A crash input, once fixed, belongs in tests/fuzz/corpus/<name>/ so that the ctests
# fuzz_replay_<name> replay it in every build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FPN_FUZZ_BUILD_DIR:-build-fuzz}"
[[ "${build_dir}" = /* ]] || build_dir="${root}/${build_dir}"
seconds="${FPN_FUZZ_SECONDS:-60}"
seed="${FPN_FUZZ_SEED:-0}"
cxx="${FPN_FUZZ_CXX:-clang++}"
jobs="${FPN_JOBS:-2}"

if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=()
  for source in "${root}"/tests/fuzz/fuzz_*.cpp; do
    name="$(basename "${source}" .cpp)"
    targets+=("${name#fuzz_}")
  done
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/fpn_fuzz.XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT

# A missing libFuzzer runtime (Debian: libclang-rt-<version>-dev, pulled in by clang) would
# otherwise surface as a link error deep in the build.
echo "==> checking that ${cxx} links -fsanitize=fuzzer"
"${cxx}" --version | sed -n 1p
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"${scratch}/probe.cpp"
if ! "${cxx}" -fsanitize=fuzzer,address,undefined "${scratch}/probe.cpp" -o "${scratch}/probe"; then
  echo "error: ${cxx} cannot link -fsanitize=fuzzer (install clang's libFuzzer runtime)" >&2
  exit 1
fi

# Assertions stay on (no NDEBUG), as in the sanitizer job of .ci/run.
configure=(-S "${root}" -B "${build_dir}" -DCMAKE_CXX_COMPILER="${cxx}"
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g"
  -DFPN_BUILD_BENCH=OFF -DFPN_BUILD_EXAMPLES=OFF -DFPN_INSTALL=OFF)
if [[ ! -f "${build_dir}/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure+=(-G Ninja)
fi
if command -v ccache >/dev/null 2>&1; then
  configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
echo "==> configure ${build_dir}"
cmake "${configure[@]}"
echo "==> build ${targets[*]/#/fuzz_} with ${jobs} jobs"
cmake --build "${build_dir}" --parallel "${jobs}" --target "${targets[@]/#/fuzz_}"

failed=()
for name in "${targets[@]}"; do
  corpus="${scratch}/corpus_${name}"
  artifacts="${build_dir}/artifacts/${name}"
  mkdir -p "${corpus}" "${artifacts}"
  cp -R "${root}/tests/fuzz/corpus/${name}/." "${corpus}/"
  options=(-max_total_time="${seconds}" -seed="${seed}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
    -artifact_prefix="${artifacts}/")
  if [[ -f "${root}/tests/fuzz/${name}.dict" ]]; then
    options+=(-dict="${root}/tests/fuzz/${name}.dict")
  fi
  echo "==> fuzz ${name} for ${seconds} s from $(find "${corpus}" -type f | wc -l) seeds"
  # UBSan is built to abort (-fno-sanitize-recover); its stack trace names the faulty line.
  if UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}" \
      "${build_dir}/tests/fuzz_${name}" "${options[@]}" "${corpus}" 2>"${scratch}/${name}.log"; then
    stats='^(stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)'
    grep -E "${stats}|#[0-9]+[[:space:]]+DONE)" "${scratch}/${name}.log" || true
    echo "==> ${name}: no findings ($(find "${corpus}" -type f | wc -l) inputs in the corpus)"
  else
    tail -n 80 "${scratch}/${name}.log"
    echo "==> ${name}: FAILED; the input is in ${artifacts}/" >&2
    failed+=("${name}")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "==> fuzzing passed: ${targets[*]}"
