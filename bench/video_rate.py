#!/usr/bin/python3
"""Video rate: frames per second of a detector on a stream of 480x640 frames, one model load.

    /usr/bin/python3 bench/video_rate.py --fpn-detect build/examples/fpn_detect \
        [--arch fasterrcnn_mobilenet_v3_large_320_fpn] [--frames 60] [--threads 2] [--work-dir DIR]

The frames are distinct synthetic scenes (tools/fpn_tools/models.py synthetic_image, a seed per
frame) as PNG files in one folder; the weights are the seeded, BatchNorm-calibrated ones of the
fixtures and bench/compare_peers.py (about 100 detections a frame, so the ROI heads work as on a
busy scene). The same frames run through:

- fpn: `fpn_detect` over the folder, one process (one model load; each frame decoded, resized,
  detected and its detections kept for the JSON). Reported: the steady frame rate (1 / the median
  of the per-frame detect times fpn_detect prints, first frame excluded), and the whole process's
  frames / wall time (start, load, decode, JSON included).
- torchvision (unless --no-torchvision): model([frame]) in process after a warm-up, the same
  frames as float tensors, torch.set_num_threads(--threads); 1 / the median frame time.

Run it on a quiet machine: these are absolute rates, unlike compare_peers.py's ratios.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, "..", "tools")
sys.path.insert(0, TOOLS)
SEED = 4321              # as compare_peers.py: the same seeded weights
CLASSIFIER_SCALE = 3.0
HEIGHT, WIDTH = 480, 640

PEER = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["FPN_TOOLS"])
import numpy as np, torch
from PIL import Image
from fpn_tools import models
arch, weights, folder, threads = sys.argv[1:5]
torch.set_num_threads(int(threads))
model = models.load_detector(arch, weights)
frames = [models.image_tensor(np.asarray(Image.open(os.path.join(folder, name)).convert("RGB")))
          for name in sorted(os.listdir(folder))]
times, detections = [], 0
with torch.no_grad():
    model([frames[0]])
    for frame in frames:
        start = time.perf_counter()
        out = model([frame])
        times.append(time.perf_counter() - start)
        detections += len(out[0]["scores"])
print(json.dumps({"times": times, "detections": detections}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fpn-detect", required=True)
    parser.add_argument("--arch", default="fasterrcnn_mobilenet_v3_large_320_fpn")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", help="where weights go (default: a temporary directory)")
    parser.add_argument("--no-torchvision", action="store_true")
    args = parser.parse_args()
    if args.frames < 2:
        sys.exit("--frames must be at least 2")
    from PIL import Image
    from fpn_tools import models

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.work_dir or scratch
        os.makedirs(directory, exist_ok=True)
        weights = os.path.join(directory, f"{args.arch}.safetensors")
        if not os.path.exists(weights):
            models.save_seeded_detector(args.arch, weights, SEED, classifier_scale=CLASSIFIER_SCALE)
        folder = os.path.join(scratch, "frames")
        os.makedirs(folder)
        for frame in range(args.frames):
            rgb = models.synthetic_image(HEIGHT, WIDTH, 1000 + frame)
            Image.fromarray(rgb, "RGB").save(os.path.join(folder, f"frame_{frame:05d}.png"))

        json_path = os.path.join(scratch, "detections.json")
        start = time.perf_counter()
        run = subprocess.run([args.fpn_detect, "--arch", args.arch, "--weights", weights,
                              "--threads", str(args.threads), "--json", json_path, folder],
                             capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"fpn_detect failed ({run.returncode}):\n{run.stderr}")
        # "<index> <path>: <n> detections (<seconds> s)", one line per frame.
        per_frame = [float(m.group(1)) for m in
                     re.finditer(r"^\d+ \S+: \d+ detections? \(([0-9.]+) s\)", run.stdout, re.M)]
        if len(per_frame) != args.frames:
            sys.exit(f"expected {args.frames} frame times from fpn_detect, found {len(per_frame)}")
        with open(json_path) as f:
            fpn_detections = len(json.load(f))
        steady = statistics.median(per_frame[1:])
        print(f"{args.arch}, {args.frames} frames of {HEIGHT}x{WIDTH}, {args.threads} threads")
        print(f"fpn_detect: {1 / steady:.1f} frames/s steady (median frame {steady * 1000:.1f} ms, "
              f"first frame {per_frame[0] * 1000:.0f} ms); whole process {args.frames / wall:.1f} "
              f"frames/s ({wall:.2f} s incl. start and load); "
              f"{fpn_detections / args.frames:.0f} detections/frame")
        if not args.no_torchvision:
            env = dict(os.environ, FPN_TOOLS=TOOLS, OMP_NUM_THREADS=str(args.threads))
            peer = subprocess.run([sys.executable, "-c", PEER, args.arch, weights, folder,
                                   str(args.threads)], capture_output=True, text=True, env=env)
            if peer.returncode != 0:
                sys.exit(f"torchvision failed:\n{peer.stderr}")
            result = json.loads(peer.stdout.strip().splitlines()[-1])
            tv = statistics.median(result["times"])
            print(f"torchvision in process: {1 / tv:.1f} frames/s (median frame {tv * 1000:.1f} ms); "
                  f"{result['detections'] / args.frames:.0f} detections/frame; "
                  f"fpn / torchvision frame time {steady / tv:.2f}x")


if __name__ == "__main__":
    main()
