#!/usr/bin/env bash
# The README's first command: builds fpn_detect (Release, -march=native) and runs it with its
# bundled demo model (examples/data/demo_shapes_maskrcnn.safetensors, a Mask R-CNN that
# tools/train_demo.py trained on scenes of five shapes) on the bundled scene
# examples/data/shapes_scene.png, which the model never saw in training. Prints the detections
# and writes build/demo/detections.json (COCO results) and build/demo/detections.png (translucent
# masks, boxes and "label score" captions drawn on the image).
# Detections scoring 0.7 or less are left out of the picture and the JSON: this model scores the
# objects of the scene above 0.9, and its typical mistake, a second box of a similar shape
# on an object (a square on a small triangle), 0.5 to 0.9.
#
# Installs the missing Debian packages first (tools/install_deps.sh demo; FPN_SKIP_INSTALL=1 skips
# that). The configure and build output goes to build/demo/build.log, shown only when a step
# fails. FPN_BUILD_DIR and FPN_JOBS as for tools/run_tests.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FPN_BUILD_DIR:-build}"
[[ "${build_dir}" = /* ]] || build_dir="${root}/${build_dir}"
demo_dir="${build_dir}/demo"

"${root}/tools/install_deps.sh" demo

configure=(-S "${root}" -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release)
if [[ ! -f "${build_dir}/CMakeCache.txt" ]]; then
  if command -v ninja >/dev/null 2>&1; then
    configure+=(-G Ninja)
  fi
  # A fresh build directory needs no test or benchmark dependencies for the demo;
  # tools/run_tests.sh turns them on again in the same directory.
  configure+=(-DFPN_BUILD_TESTS=OFF -DFPN_BUILD_BENCH=OFF)
fi
if command -v ccache >/dev/null 2>&1; then
  configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

mkdir -p "${demo_dir}"
log="${demo_dir}/build.log"
# On failure: the failing step (from ninja's first FAILED line, or the end of the log) and the
# log's path.
show_log() {
  echo "$1; the end of ${log}:" >&2
  if grep -q '^FAILED: ' "${log}"; then
    sed -n '/^FAILED: /,$p' "${log}" | head -n 150 >&2
  else
    tail -n 60 "${log}" >&2
  fi
  echo "(whole log: ${log})" >&2
  exit 1
}
if [[ -f "${build_dir}/examples/fpn_detect" ]]; then
  echo "building fpn_detect in ${build_dir}..."
else
  echo "building fpn_detect in ${build_dir} (the first build takes about a minute)..."
fi
cmake "${configure[@]}" >"${log}" 2>&1 || show_log "configuring failed"
cmake --build "${build_dir}" --target fpn_detect --parallel "${FPN_JOBS:-2}" >>"${log}" 2>&1 \
  || show_log "building fpn_detect failed"

# No --arch or --weights: fpn_detect runs its bundled demo model, found beside the program.
"${build_dir}/examples/fpn_detect" --score-thresh 0.7 \
  --json "${demo_dir}/detections.json" --output "${demo_dir}/detections.png" \
  "${root}/examples/data/shapes_scene.png"
echo "wrote ${demo_dir}/detections.json and ${demo_dir}/detections.png"
