#!/usr/bin/env bash
# The library as a user's program gets it, against fpn_detect: installs fpn from BUILD_DIR into a
# scratch prefix, builds bench/consumer (find_package; detect_plain with fpn::fpn and no flags,
# detect_native with fpn::native) in Release, and times Mask R-CNN R50-FPN's detect in each and in
# fpn_detect on the same weights and image (427x640, 800x1216 after preprocessing).
#
#   bench/consumer_speed.sh WEIGHTS IMAGE.png [BUILD_DIR (default build)] [repeats (default 3)]
#
# WEIGHTS: a maskrcnn_resnet50_fpn safetensors, e.g. the seeded one bench/compare_peers.py
# --work-dir DIR writes (DIR/maskrcnn_resnet50_fpn.safetensors, DIR/image_427x640.png).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
weights="$1"
image="$2"
build_dir="${3:-${root}/build}"
repeats="${4:-3}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

cmake --install "${build_dir}" --prefix "${work}/prefix" >/dev/null
cmake -S "${root}/bench/consumer" -B "${work}/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="${work}/prefix" >/dev/null
cmake --build "${work}/build" --parallel 2 >/dev/null
/usr/bin/python3 -c 'import sys; from PIL import Image; Image.open(sys.argv[1]).convert("RGB").save(sys.argv[2])' \
  "${image}" "${work}/image.ppm"

for program in detect_plain detect_native; do
  echo "${program}: $("${work}/build/${program}" "${weights}" "${work}/image.ppm" "${repeats}")"
done
# fpn_detect prints each image's detect time as "(N.NNN s)"; the median of `repeats` runs.
times=()
for _ in $(seq "${repeats}"); do
  times+=("$("${build_dir}/examples/fpn_detect" --arch maskrcnn_resnet50_fpn --weights "${weights}" \
    "${image}" 2>/dev/null | sed -n 's/.*detections.*(\([0-9.]*\) s).*/\1/p' | head -1)")
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="${repeats}" '{t[NR]=$1} END {print "fpn_detect: detect median " t[int((n+1)/2)] " s over " n}'
