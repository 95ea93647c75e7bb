#!/usr/bin/env bash
# The README's first command: builds fpn_detect (Release, -march=native) and runs the detector on
# the demo scene, printing the detections and writing build/demo/detections.json (COCO results)
# and build/demo/detections.png (boxes, masks, labels drawn on the image).
#
# Until the trained demo model lands, the model is a seeded, calibrated Mask R-CNN R18-FPN made by
# tools/make_demo_inputs.py with Debian's torchvision: the pipeline runs for real, but its random
# weights recognise nothing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FPN_BUILD_DIR:-build}"
[[ "${build_dir}" = /* ]] || build_dir="${root}/${build_dir}"
demo_dir="${build_dir}/demo"

configure=(-S "${root}" -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release)
if [[ ! -f "${build_dir}/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  configure+=(-G Ninja)
fi
if command -v ccache >/dev/null 2>&1; then
  configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake "${configure[@]}" >/dev/null
cmake --build "${build_dir}" --target fpn_detect --parallel "${FPN_JOBS:-2}"

mapfile -t inputs < <(/usr/bin/python3 "${root}/tools/make_demo_inputs.py" --out "${demo_dir}")
weights="${inputs[0]}"
image="${inputs[1]}"

"${build_dir}/examples/fpn_detect" --arch maskrcnn_resnet18_fpn --weights "${weights}" \
  --json "${demo_dir}/detections.json" --output "${demo_dir}/detections.png" "${image}"
echo "wrote ${demo_dir}/detections.json and ${demo_dir}/detections.png"
