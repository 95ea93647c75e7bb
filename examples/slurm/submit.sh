#!/usr/bin/env bash
# Submits fpn_detect over a large collection as a Slurm array job, one task per shard, and the
# merge of the shards' results as a job that runs after every task has ended.
#
#   examples/slurm/submit.sh SHARDS OUTDIR FPN_DETECT_OPTIONS... IMAGES...
#   examples/slurm/submit.sh 64 run1/ --weights maskrcnn_r50.safetensors --score-thresh 0.5 photos/
#
# Task K (0..SHARDS-1) runs `fpn_detect --shard K/SHARDS --resume OUTDIR/shard_K.jsonl
# --json OUTDIR/shard_K.json --threads $SLURM_CPUS_PER_TASK` with the options and images given
# (examples/slurm/fpn_detect_shard.sbatch); the merge job (merge_shards.sbatch) writes
# OUTDIR/results.json and OUTDIR/results.images.json, equal to one fpn_detect run over all images.
# Every task must see the same IMAGES under the same names: run this from a directory that all
# nodes see (the jobs start there), with paths relative to it or absolute.
#
# A task that dies (node failure, time limit, preemption) loses at most its image in flight:
# resubmit that index with the same command and it resumes from its log,
#   examples/slurm/submit.sh SHARDS OUTDIR ... with FPN_ARRAY=7 (or 3,7,12-15)
# which also submits a new merge. The merge runs after the tasks whatever their exit status
# (afterany, not afterok, so that it never waits forever on a dead task) and refuses to write
# anything while an image of any shard is missing, naming the shards to run again.
#
# Environment:
#   FPN_DETECT          the fpn_detect program (default: fpn_detect on PATH, else this
#                       checkout's build/examples/fpn_detect)
#   FPN_CPUS_PER_TASK   cores per task, which fpn_detect's --threads follows (default 2)
#   FPN_ARRAY           the array indices to submit (default 0-(SHARDS-1))
#   FPN_SBATCH_OPTIONS  more sbatch options for both jobs, e.g. "--partition=cpu --time=12:00:00"
# Prints the two job ids: the array's and the merge's.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 3 ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
shards="$1"
out="$2"
shift 2
if ! [[ "${shards}" =~ ^[1-9][0-9]*$ ]]; then
  echo "submit.sh: SHARDS must be a positive number, got '${shards}'" >&2
  exit 2
fi
if [[ -z "${FPN_DETECT:-}" ]]; then
  FPN_DETECT="$(command -v fpn_detect || echo "${here}/../../build/examples/fpn_detect")"
fi
[[ -x "${FPN_DETECT}" ]] || { echo "submit.sh: FPN_DETECT '${FPN_DETECT}' is not a program" >&2; exit 2; }
# The batch scripts run from Slurm's copy of them: they find the tools through the environment.
export FPN_DETECT="$(realpath "${FPN_DETECT}")"
export FPN_MERGE_RESULTS="$(realpath "${here}/../../tools/merge_results.py")"
mkdir -p "${out}/logs"
read -r -a extra <<<"${FPN_SBATCH_OPTIONS:-}"

array_job=$(sbatch --parsable --job-name=fpn_detect --array="${FPN_ARRAY:-0-$((shards - 1))}" \
  --cpus-per-task="${FPN_CPUS_PER_TASK:-2}" --output="${out}/logs/shard_%a.out" "${extra[@]}" \
  "${here}/fpn_detect_shard.sbatch" "${shards}" "${out}" "$@")
array_job="${array_job%%;*}"  # --parsable prints "id;cluster" on multi-cluster setups
merge_job=$(sbatch --parsable --job-name=fpn_merge --dependency="afterany:${array_job}" \
  --cpus-per-task=1 --output="${out}/logs/merge.out" "${extra[@]}" \
  "${here}/merge_shards.sbatch" "${shards}" "${out}")
echo "${array_job} ${merge_job%%;*}"
