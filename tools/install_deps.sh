#!/usr/bin/env bash
# Installs the Debian 12 packages that fpn's commands need: the one place for the package lists
# (README "Dependencies and why each" explains each package).
#
#   tools/install_deps.sh [--dry-run | --list] SET...
#
# Sets:
#   demo  building and running fpn_detect (tools/run_demo.sh)
#   test  demo + the test suite, benchmarks, torch fixtures and fuzzers (tools/run_tests.sh)
#   ci    what .ci/run needs (the same as test)
#
# Only the packages that dpkg does not report as installed are installed; when none is missing,
# the script prints nothing and does not touch apt. As root it runs apt-get update (three tries)
# and apt-get install; otherwise it uses sudo when sudo needs no password, and else prints the
# exact command to run and exits with status 1.
#
#   --dry-run  print the missing packages, one a line, and change nothing
#   --list     print every package of the sets, one a line
#
# Environment:
#   FPN_SKIP_INSTALL=1     do nothing and succeed (dependencies installed another way)
#   FPN_INSTALL_VERBOSE=1  show apt-get's output (otherwise kept in a log shown on failure)
#
# On a system without dpkg-query and apt-get it prints what to install, checks for the commands,
# headers and Python modules it can find, and fails when one is missing.
set -euo pipefail

if [[ "${FPN_SKIP_INSTALL:-0}" = 1 ]]; then
  exit 0
fi

# Debian 12 (bookworm) package names.
demo_packages=(
  cmake ninja-build g++ ccache                # building; ccache only speeds up rebuilds
  libeigen3-dev                               # GEMM and the rest of fpn's maths
  nlohmann-json3-dev libcli11-dev             # the examples' COCO JSON and command lines
  libstb-dev                                  # the examples' image codecs, captions
  libjpeg62-turbo-dev libpng-dev             # the examples' JPEG and PNG decoders, as PIL's
)
test_packages=(
  "${demo_packages[@]}"
  libgtest-dev libgmock-dev                   # unit tests
  libbenchmark-dev                            # bench/
  python3-torchvision python3-numpy python3-pil  # test fixtures and the weight converter
  libopenblas0-pthread time                   # bench/compare_peers.py: the peer at its best, peak RSS
  clang                                       # libFuzzer (tools/run_fuzzers.sh) and ThreadSanitizer
  slurm-wlm munge                             # examples/slurm/ on a single-node Slurm (test_shards.py)
)

usage() {
  echo "usage: $0 [--dry-run | --list] {demo|test|ci}..." >&2
  exit 2
}

mode=install
sets=()
for arg in "$@"; do
  case "${arg}" in
    --dry-run) mode=dry-run ;;
    --list) mode=list ;;
    demo | test | ci) sets+=("${arg}") ;;
    *) usage ;;
  esac
done
[[ ${#sets[@]} -gt 0 ]] || usage

# Each set holds the ones before it, so the sets' union is the largest set named.
# (No associative arrays or namerefs: the non-Debian path must run on macOS's bash 3.2 too.)
wants_tests=0
for set in "${sets[@]}"; do
  [[ "${set}" = demo ]] || wants_tests=1
done
if [[ ${wants_tests} = 1 ]]; then
  packages=("${test_packages[@]}")
else
  packages=("${demo_packages[@]}")
fi

if [[ "${mode}" = list ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

# Not Debian: say what to install, and check what can be checked without a package manager.
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  include_dirs=(/usr/include /usr/local/include /opt/homebrew/include /opt/local/include)
  for prefix in ${CMAKE_PREFIX_PATH:+${CMAKE_PREFIX_PATH//:/ }}; do include_dirs+=("${prefix}/include"); done
  for dir in ${CPATH:+${CPATH//:/ }}; do include_dirs+=("${dir}"); done
  not_found=()
  have_header() {
    local dir
    for dir in "${include_dirs[@]}"; do
      [[ -f "${dir}/$1" ]] && return 0
    done
    return 1
  }
  need_command() {
    local name
    for name in "$@"; do
      command -v "${name}" >/dev/null 2>&1 && return 0
    done
    not_found+=("command $1")
  }
  need_header() {
    local header
    for header in "$@"; do
      have_header "${header}" && return 0
    done
    not_found+=("header $1")
  }
  need_command cmake
  need_command c++ g++ clang++
  need_header eigen3/Eigen/Core Eigen/Core
  need_header nlohmann/json.hpp
  need_header CLI/CLI.hpp
  need_header stb/stb_image.h
  need_header jpeglib.h
  need_header png.h
  if [[ ${wants_tests} = 1 ]]; then
    need_header gtest/gtest.h
    need_header gmock/gmock.h
    need_header benchmark/benchmark.h
    need_command clang++
    need_command slurmctld
    need_command slurmd
    need_command munged
    if ! python3 -c 'import torch, torchvision, numpy, PIL' >/dev/null 2>&1; then
      not_found+=("python3 modules torch, torchvision, numpy, PIL")
    fi
  fi
  if [[ ${#not_found[@]} -eq 0 ]]; then
    exit 0
  fi
  {
    echo "install_deps.sh: no dpkg-query/apt-get here, so nothing was installed. Please install:"
    echo "  Eigen 3.4, CMake >= 3.20, a C++20 compiler (GCC 12 or Clang 14 or newer),"
    echo "  nlohmann-json, CLI11, libjpeg-turbo (libjpeg API), libpng, stb (headers as <stb/stb_image.h>)"
    if [[ ${wants_tests} = 1 ]]; then
      echo "  and for the tests: GoogleTest with GoogleMock, Google Benchmark, Clang (libFuzzer),"
      echo "  Python 3 with torch, torchvision 0.14.1, numpy and PIL, Slurm (slurmctld, slurmd,"
      echo "  sbatch) and MUNGE"
    fi
    echo "Not found in ${include_dirs[*]} or on PATH:"
    printf '  %s\n' "${not_found[@]}"
    echo "If they are installed where this script does not look, run again with FPN_SKIP_INSTALL=1."
  } >&2
  exit 1
fi

# Missing: not reported as "install ok installed" (an unknown package prints nothing on stdout).
installed=" $(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null \
  | sed -n 's/ install ok installed$//p' | tr '\n' ' ' || true) "
missing=()
for package in "${packages[@]}"; do
  [[ "${installed}" = *" ${package} "* ]] || missing+=("${package}")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ "${mode}" = dry-run ]]; then
  printf '%s\n' "${missing[@]}"
  exit 0
fi

install_command="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ ${EUID} -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n env DEBIAN_FRONTEND=noninteractive)  # sudo drops the environment
else
  {
    echo "fpn needs ${#missing[@]} Debian package(s) that are not installed; install them with"
    echo "  sudo apt-get update && sudo ${install_command}"
    echo "(or the same without sudo as root), then run this command again."
    echo "(FPN_SKIP_INSTALL=1 skips this check.)"
  } >&2
  exit 1
fi

echo "installing ${#missing[@]} Debian package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [[ "${FPN_INSTALL_VERBOSE:-0}" = 1 ]]; then
  log=/dev/stdout
else
  log="$(mktemp "${TMPDIR:-/tmp}/fpn_install_deps.XXXXXX.log")"
fi
fail() {
  echo "install_deps.sh: $1" >&2
  if [[ "${log}" != /dev/stdout ]]; then
    tail -n 40 "${log}" >&2
    echo "(apt-get's whole output: ${log})" >&2
  fi
  exit 1
}
for attempt in 1 2 3; do
  if "${as_root[@]}" apt-get update >>"${log}" 2>&1 </dev/null; then break; fi
  [[ ${attempt} -lt 3 ]] || fail "apt-get update failed three times"
  sleep 10
done
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >>"${log}" 2>&1 </dev/null \
  || fail "apt-get install failed"
[[ "${log}" = /dev/stdout ]] || rm -f "${log}"
echo "installed ${missing[*]}"
