#!/usr/bin/env bash
# Configures, builds and runs fpn's whole test suite: gtest binaries, torch fixtures, header
# self-containedness, compile-fail cases and the find_package/add_subdirectory consumers.
#
#   tools/run_tests.sh [extra cmake configure arguments...]
#
# Environment (the defaults are the README's command):
#   FPN_BUILD_DIR   build directory, relative to the repository root   (default: build)
#   FPN_BUILD_TYPE  CMAKE_BUILD_TYPE                                    (default: Release)
#   FPN_JOBS        parallel build and test jobs                        (default: 2)
#   FPN_CTEST_ARGS  more ctest arguments, e.g. -E <regex> to leave tests out (default: none)
#   FPN_SKIP_INSTALL=1  don't run tools/install_deps.sh test (which installs the missing Debian
#                   packages first, or prints the command to do so)
# e.g. the sanitizer job of .ci/run:
#   FPN_BUILD_DIR=build-asan FPN_BUILD_TYPE=Debug tools/run_tests.sh -DFPN_SANITIZE=ON
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FPN_BUILD_DIR:-build}"
[[ "${build_dir}" = /* ]] || build_dir="${root}/${build_dir}"
build_type="${FPN_BUILD_TYPE:-Release}"
jobs="${FPN_JOBS:-2}"

"${root}/tools/install_deps.sh" test

# Tests and benchmarks on explicitly: tools/run_demo.sh configures a fresh build/ without them.
# Arguments given to this script come later and win.
configure=(-S "${root}" -B "${build_dir}" -DCMAKE_BUILD_TYPE="${build_type}"
           -DFPN_BUILD_TESTS=ON -DFPN_BUILD_BENCH=ON)
# Ninja when it is there, and only for a fresh build directory: CMake refuses to switch the
# generator of an existing one.
if [[ ! -f "${build_dir}/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure+=(-G Ninja)
fi
if command -v ccache >/dev/null 2>&1; then
  configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

echo "==> configure ${build_dir} (${build_type}) $*"
cmake "${configure[@]}" "$@"
echo "==> build ${build_dir} with ${jobs} jobs"
cmake --build "${build_dir}" --parallel "${jobs}"
echo "==> test ${build_dir} with ${jobs} jobs"
read -r -a ctest_args <<< "${FPN_CTEST_ARGS:-}"
ctest --test-dir "${build_dir}" --output-on-failure --parallel "${jobs}" "${ctest_args[@]}"
