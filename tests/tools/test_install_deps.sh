#!/usr/bin/env bash
# tools/install_deps.sh against a fake dpkg-query and apt-get on PATH: it names exactly the missing
# packages, touches apt only when one is missing, and README's Dependencies table names every
# package it installs.
#   tests/tools/test_install_deps.sh   (from the repository root; ctest tools_install_deps)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
script="${root}/tools/install_deps.sh"
fake="$(mktemp -d "${TMPDIR:-/tmp}/fpn_install_deps_test.XXXXXX")"
trap 'rm -rf "${fake}"' EXIT

# dpkg-query -W -f='${Package} ${Status}\n' NAMES...: FAKE_INSTALLED are installed, FAKE_REMOVED
# were removed with their configuration kept, the rest are unknown to dpkg.
cat >"${fake}/dpkg-query" <<'EOF'
#!/usr/bin/env bash
status=0
for name in "${@:3}"; do
  if [[ " ${FAKE_INSTALLED} " = *" ${name} "* ]]; then
    echo "${name} install ok installed"
  elif [[ " ${FAKE_REMOVED:-} " = *" ${name} "* ]]; then
    echo "${name} deinstall ok config-files"
  else
    echo "dpkg-query: no packages found matching ${name}" >&2
    status=1
  fi
done
exit "${status}"
EOF
cat >"${fake}/apt-get" <<'EOF'
#!/usr/bin/env bash
echo "apt-get $*" >>"${FAKE_APT_LOG}"
EOF
chmod +x "${fake}/dpkg-query" "${fake}/apt-get"
export PATH="${fake}:${PATH}" FAKE_APT_LOG="${fake}/apt.log"
unset FPN_SKIP_INSTALL

failures=0
expect() {  # expect DESCRIPTION EXPECTED ACTUAL
  if [[ "$2" != "$3" ]]; then
    printf 'FAIL: %s\n  expected: [%s]\n  actual:   [%s]\n' "$1" "$2" "$3"
    failures=$((failures + 1))
  else
    echo "ok: $1"
  fi
}
words() { tr '\n' ' ' | sed 's/ *$//'; }

demo="$("${script}" --list demo | words)"
test_set="$("${script}" --list test | words)"
expect "ci is the test set" "${test_set}" "$("${script}" --list ci | words)"
expect "the demo set starts the test set" "${demo}" "${test_set:0:${#demo}}"
for package in libeigen3-dev cmake libjpeg62-turbo-dev libpng-dev; do
  [[ " ${demo} " = *" ${package} "* ]] || expect "demo holds ${package}" yes no
done
for package in libgtest-dev libbenchmark-dev python3-torchvision python3-pil clang; do
  [[ " ${test_set} " = *" ${package} "* ]] || expect "test holds ${package}" yes no
  [[ " ${demo} " != *" ${package} "* ]] || expect "demo leaves out ${package}" yes no
done

# Everything installed: nothing printed, apt untouched.
export FAKE_INSTALLED="${test_set}"
expect "nothing missing: dry run prints nothing" "" "$("${script}" --dry-run test 2>&1)"
expect "nothing missing: install prints nothing" "" "$("${script}" test 2>&1)"
expect "nothing missing: apt-get not run" "no" "$([[ -e ${FAKE_APT_LOG} ]] && echo yes || echo no)"

# Two missing: one unknown to dpkg, one removed with its configuration kept.
FAKE_INSTALLED="$(echo " ${test_set} " | sed 's/ libpng-dev / /; s/ time / /')"
export FAKE_REMOVED="time"
expect "demo lists exactly the missing one" "libpng-dev" "$("${script}" --dry-run demo | words)"
expect "test lists exactly the missing two" "libpng-dev time" "$("${script}" --dry-run test | words)"
expect "demo and test together" "libpng-dev time" "$("${script}" --dry-run demo test | words)"
expect "dry run leaves apt alone" "no" "$([[ -e ${FAKE_APT_LOG} ]] && echo yes || echo no)"
expect "skip: nothing printed" "" "$(FPN_SKIP_INSTALL=1 "${script}" test 2>&1)"
if [[ ${EUID} -eq 0 ]]; then
  "${script}" test >/dev/null
  expect "as root: update, then install of the missing only" \
    "apt-get update|apt-get install -y --no-install-recommends libpng-dev time" \
    "$(tr '\n' '|' <"${FAKE_APT_LOG}" | sed 's/|$//')"
elif ! sudo -n true >/dev/null 2>&1; then
  # (With passwordless sudo the script would run the real apt-get: sudo resets PATH.)
  set +e
  output="$("${script}" test 2>&1)"
  status=$?
  set -e
  expect "not root: fails" 1 "${status}"
  expect "not root: prints the command" yes \
    "$([[ "${output}" = *"sudo apt-get install -y --no-install-recommends libpng-dev time"* ]] \
      && echo yes || echo no)"
fi
set +e
"${script}" bogus >/dev/null 2>&1
expect "an unknown set is a usage error" 2 "$?"
set -e

# README's Dependencies table names every package.
readme_deps="$(sed -n '/^## Dependencies and why each/,/^## /p' "${root}/README.md")"
for package in ${test_set}; do
  [[ "${readme_deps}" = *"\`${package}\`"* ]] || expect "README's Dependencies names ${package}" yes no
done

if [[ ${failures} -gt 0 ]]; then
  echo "${failures} failure(s)"
  exit 1
fi
echo "all passed"
