#!/usr/bin/python3
"""fpn against torchvision, side by side in one run: time and peak memory per detector arch.

    /usr/bin/python3 bench/compare_torchvision.py --fpn-detect build/examples/fpn_detect \
        [--arch maskrcnn_resnet50_fpn ...] [--height 427 --width 640] [--repeats 5]

Both sides run the same seeded, BatchNorm-calibrated weights (tools/fpn_tools/models.py, the
fixtures' weights: about 100 detections per image, so the mask head works as hard as on a busy
real image) on the same synthetic image; 427x640 preprocesses to torchvision's 800x1216 batch.
The MobileNetV3-Large FPN archs run at their builders' defaults on both sides (torchvision's
builder; fpn_detect --arch, whose default params are the builder's): 800/1333 for
fasterrcnn_mobilenet_v3_large_fpn, 320/640 and 150 proposals for the 320 variant (427x640 ->
320x480). Their seeded weights' detection counts vary more from image to image than the ResNets'.

- torchvision: the peer at its best. One python3 process per arch with torch.set_num_threads
  (default 2), oneDNN convolutions and OpenBLAS; the model is built and loaded, one warm-up run,
  then `repeats` timed runs of model([image]) in process. Its peak RSS is that whole process's.
- fpn: `fpn_detect --json` as a whole process, `repeats` times: start, weight load, image decode,
  inference and the JSON write all count. Its peak RSS is the largest of those processes'.

Peak RSS is GNU time's %M for each process (Debian package `time`), as the issue measures it.

Prints, per arch, the median times and the ratios fpn / torchvision (time, peak RSS). Refuses to
compare against a torch whose BLAS is the reference implementation (Debian's libblas3 without
libopenblas0-pthread): its box head runs ~50x slower, and beating that means nothing.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, "..", "tools")
ARCHS = [f"{kind}_resnet{depth}_fpn" for kind in ("fasterrcnn", "maskrcnn")
         for depth in (18, 34, 50, 101)] + ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2",
                                            "fasterrcnn_mobilenet_v3_large_fpn",
                                            "fasterrcnn_mobilenet_v3_large_320_fpn"]
sys.path.insert(0, TOOLS)  # fpn_tools, for the seeded weights and images of the fixtures
SEED = 4321
CLASSIFIER_SCALE = 3.0  # as tools/fixtures/detector.py: ~100 detections per image

# Runs in its own python3 process so that its peak RSS is torchvision's alone.
PEER = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["FPN_TOOLS"])
import numpy as np, torch
from fpn_tools import models
from fpn_tools.safetensors_io import load_file
arch, weights, image_path, repeats, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
torch.ones(64, 64) @ torch.ones(64, 64)  # loads the BLAS, to be named below
with open("/proc/self/maps") as maps:
    blas = sorted({line.split()[-1] for line in maps if "blas" in line.split()[-1].lower()})
model = models.build_detector(arch)
tensors, _ = load_file(weights)
model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
del tensors
model.eval()
rgb = np.load(image_path)
image = models.image_tensor(rgb)
times = []
with torch.no_grad():
    model([image])  # warm-up
    for _ in range(int(repeats)):
        start = time.perf_counter()
        out = model([image])
        times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "detections": len(out[0]["scores"]), "blas": blas}))
"""


TIME = "/usr/bin/time"


def peak_rss_of(command, env=None):
    """Runs a command under GNU time; returns (wall seconds, peak RSS in KB, stdout).

    The peak is GNU time's %M: its child is forked from that small process, so the figure is the
    command's own. (A child spawned from this Python process would report at least this process's
    peak: Linux carries the old memory's high-water mark across exec into ru_maxrss.)
    """
    with tempfile.NamedTemporaryFile("r") as peak, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        timed = [TIME, "-f", "%M", "-o", peak.name] + list(command)
        start = time.perf_counter()
        pid = os.posix_spawn(TIME, timed, env if env is not None else os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                           (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status = os.waitpid(pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{' '.join(map(str, command))} failed with exit code {code}:\n{stderr}")
        peak_kb = int(peak.read().strip().splitlines()[-1])
    return wall, peak_kb, stdout


def make_inputs(arch, directory, height, width):
    import numpy as np
    from PIL import Image
    from fpn_tools import models
    weights = os.path.join(directory, f"{arch}.safetensors")
    if not os.path.exists(weights):
        models.save_seeded_detector(arch, weights, SEED, classifier_scale=CLASSIFIER_SCALE)
    rgb = models.synthetic_image(height, width, 9)
    image_npy = os.path.join(directory, f"image_{height}x{width}.npy")
    np.save(image_npy, rgb)
    image_png = os.path.join(directory, f"image_{height}x{width}.png")
    Image.fromarray(rgb, "RGB").save(image_png)
    return weights, image_npy, image_png


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fpn-detect", required=True, help="the fpn_detect binary to measure")
    parser.add_argument("--arch", nargs="+", default=["maskrcnn_resnet50_fpn"], choices=ARCHS)
    parser.add_argument("--height", type=int, default=427)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", help="where weights and images go (default: a temporary "
                        "directory, removed afterwards)")
    args = parser.parse_args()
    if not os.access(args.fpn_detect, os.X_OK):
        sys.exit(f"--fpn-detect: {args.fpn_detect} is not an executable file")
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"{TIME} is missing (apt-get install time): it measures each process's peak RSS")

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.work_dir or scratch
        os.makedirs(directory, exist_ok=True)
        rows = []
        for arch in args.arch:
            weights, image_npy, image_png = make_inputs(arch, directory, args.height, args.width)

            env = dict(os.environ, FPN_TOOLS=TOOLS, OMP_NUM_THREADS=str(args.threads))  # torch's OpenMP
            _, peer_rss, out = peak_rss_of(
                [sys.executable, "-c", PEER, arch, weights, image_npy, str(args.repeats),
                 str(args.threads)], env)
            peer = json.loads(out.strip().splitlines()[-1])
            if not any("openblas" in path.lower() for path in peer["blas"]):
                sys.exit(f"refusing to compare: torch's BLAS is {peer['blas'] or 'unknown'}, "
                         "not OpenBLAS (apt-get install libopenblas0-pthread); the reference "
                         "BLAS makes torchvision's box head ~50x slower")

            fpn_times, fpn_rss = [], 0
            json_path = os.path.join(directory, f"{arch}.json")
            for _ in range(args.repeats):
                wall, rss, _ = peak_rss_of(
                    [args.fpn_detect, "--arch", arch, "--weights", weights, "--json", json_path,
                     "--threads", str(args.threads), image_png], env)
                fpn_times.append(wall)
                fpn_rss = max(fpn_rss, rss)
            with open(json_path) as f:
                fpn_detections = len(json.load(f))

            peer_time = statistics.median(peer["times"])
            fpn_time = statistics.median(fpn_times)
            rows.append((arch, fpn_time, peer_time, fpn_rss, peer_rss, fpn_detections,
                         peer["detections"]))

    print(f"{args.height}x{args.width} image, {args.threads} threads, median of {args.repeats}; "
          f"torchvision {torch_version()} in process after a warm-up, fpn_detect whole process")
    width = max(26, max(len(row[0]) for row in rows))
    print(f"{'arch':{width}} {'fpn s':>7} {'tv s':>7} {'time':>6}  {'fpn MB':>7} {'tv MB':>7} "
          f"{'RSS':>6}  detections fpn/tv")
    for arch, fpn_time, peer_time, fpn_rss, peer_rss, fpn_count, peer_count in rows:
        print(f"{arch:{width}} {fpn_time:7.2f} {peer_time:7.2f} {fpn_time / peer_time:5.2f}x  "
              f"{fpn_rss / 1024:7.0f} {peer_rss / 1024:7.0f} {fpn_rss / peer_rss:5.2f}x  "
              f"{fpn_count}/{peer_count}")


def torch_version():
    import torch
    import torchvision
    return f"{torchvision.__version__} (torch {torch.__version__})"


if __name__ == "__main__":
    main()
