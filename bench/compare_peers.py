#!/usr/bin/python3
"""fpn against its peers, side by side in one run: time and peak memory per detector arch.

    bash bench/install_ort.sh            # once: onnxruntime-node 1.30.0 into ~/.cache/fpn-ort
    /usr/bin/python3 bench/compare_peers.py --fpn-detect build/examples/fpn_detect \
        [--arch maskrcnn_resnet50_fpn ...] [--peers torchvision ort] [--height 427 --width 640] \
        [--repeats 5] [--threads 2] [--work-dir DIR] [--allow-disagreement] [--strict]

The peers: torchvision 0.14.1 eager (the numerical oracle) and ONNX Runtime 1.30 (CPU execution
provider, through onnxruntime-node) running torchvision's ONNX export: what a C++ user would pick
instead of fpn, so the peer to beat. --peers picks either or both (default both); fpn always runs.

All sides run the same seeded, BatchNorm-calibrated weights (tools/fpn_tools/models.py, the
fixtures' weights: about 100 detections per image, so the mask head works as hard as on a busy
real image) on the same synthetic image; 427x640 preprocesses to torchvision's 800x1216 batch.
The MobileNetV3-Large FPN archs run at their builders' defaults on all sides (torchvision's
builder; fpn_detect --arch, whose default params are the builder's): 800/1333 for
fasterrcnn_mobilenet_v3_large_fpn, 320/640 and 150 proposals for the 320 variant (427x640 ->
319x479). Their seeded weights' detection counts vary more from image to image than the ResNets'.

What is measured:
- fpn: `fpn_detect --json` as a whole process, `repeats` times: start, weight load, image decode,
  inference and the JSON write all count (the time ratios are of this). Its peak RSS is the
  largest of those processes'. Beside it, (det): the median of the detect call's own time that
  fpn_detect prints, cold (first call in the process, no warm-up).
- torchvision: the peer at its best. One python3 process per arch with torch.set_num_threads
  (--threads), oneDNN convolutions and OpenBLAS; the model is built and loaded, one warm-up run,
  then `repeats` timed runs of model([image]) in process; median. Peak RSS: that whole process.
- ORT: one node process per arch (bench/ort_run.mjs) creates an InferenceSession (intra-op threads
  = --threads, inter-op 1, sequential execution, graph optimisation "all", memory pattern off),
  runs once to warm up, then `repeats` timed in-process Runs; median, and the session-create time
  separately. Peak RSS: that whole node process. The bare node + ORT floor (module loaded, no
  session) is measured once and printed in the header, so a reader can subtract it.
Peak RSS is GNU time's %M for each process (Debian package `time`), as the issue measures it.

ORT's graph (bench/ort_peer.py export, cached in the work dir as ort_<arch>_<H>x<W>.onnx and
re-exported when the weights file or the recipe changes) and the four traps of PEERS.md:
1. Opset 11: torchvision 0.14's RoiAlign carries no coordinate_transformation_mode, which opset 16
   added with default half_pixel (every region half a pixel off). RoiAlign-10 (opsets 11..15,
   tried in that order if 11 fails to export) means aligned=False, as torchvision. MobileNetV3's
   Hardswish/Hardsigmoid export at opset 11 with torch 1.13.
2. Resize: traced, the transform computes the resized size in float32 (427x640 -> 800x1199),
   eager torchvision in float64 (799x1199); the eager size is exported as a fixed size.
3. Masks: torchvision's exported paste is a quadratic Loop (4 GB, half the run time); the graph
   ends at the 28x28 mask probabilities, which is where fpn stops too (masks over their boxes).
4. Memory: ORT's memory pattern adds 300-450 MB to the peak and buys no time: it is off.

Agreement before timing: ORT's detections (of the timed process's last Run) are checked against
torchvision eager on the same image (bench/ort_peer.py agreement: greedy match by same label and
IoU > 0.9; count, labels, box IoU, score and 28x28 mask differences) and a one-line summary is
printed before any of that arch's timings. Below --min-agreement (default 0.95) of detections
matched, the script computes torchvision's float64 reference (same graph, cached) and prints how
ORT and torchvision float32 each agree with it. Seeded weights can be ill-conditioned (near-tie
scores decide which box of an NMS cluster survives; fasterrcnn_mobilenet_v3_large_320_fpn's
torchvision float32 misses ~4 of float64's 100): if ORT misses at most twice as many of float64's
detections as torchvision float32 does, ORT is accepted and the row flagged ILL-COND. Otherwise
the script refuses (exit 3) unless --allow-disagreement, which times it anyway and flags the row
DISAGREE. (A real export fault, such as RoiAlign's half-pixel shift, misses nearly all.)

A busy machine is flagged: timings under a parallel build are 2-4x slower. Before each peer's timed
section, /proc/stat is sampled over --busy-sample seconds (default 1.5) while this script sleeps:
every non-idle jiffy then belongs to other processes. During each timed process too, the machine's
non-idle CPU time less that process's own user + system time (GNU time %U %S) is what others used.
If either exceeds --busy-threshold cores (default 0.25, a quarter of one core), a loud warning is
printed and the arch's row is marked BUSY; with --strict the script refuses instead (exit 4).

Prints, per arch, the median times, fpn / torchvision and fpn / ORT time ratios, the peak RSS of
each and the fpn / ORT RSS ratio, and the detection counts. Refuses to compare against a torch whose
BLAS is the reference implementation (Debian's libblas3 without libopenblas0-pthread): its box head
runs ~50x slower, and beating that means nothing.
"""
import argparse
import base64
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
ARCHS = [f"{kind}_resnet{depth}_fpn" for kind in ("fasterrcnn", "maskrcnn")
         for depth in (18, 34, 50, 101)] + ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2",
                                            "fasterrcnn_mobilenet_v3_large_fpn",
                                            "fasterrcnn_mobilenet_v3_large_320_fpn"]
PEERS = ["torchvision", "ort"]
sys.path.insert(0, TOOLS)  # fpn_tools, for the seeded weights and images of the fixtures
sys.path.insert(0, HERE)  # ort_peer, for the agreement check (numpy only)
SEED = 4321
CLASSIFIER_SCALE = 3.0  # as tools/fixtures/detector.py: ~100 detections per image
ORT_RUN = os.path.join(HERE, "ort_run.mjs")
ORT_PEER = os.path.join(HERE, "ort_peer.py")
INSTALL_ORT = os.path.join(HERE, "install_ort.sh")

# Runs in its own python3 process so that its peak RSS is torchvision's alone.
PEER = r"""
import json, os, statistics, sys, time
sys.path.insert(0, os.environ["FPN_TOOLS"])
import numpy as np, torch, torchvision
from fpn_tools import models
arch, weights, image_path, repeats, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
torch.ones(64, 64) @ torch.ones(64, 64)  # loads the BLAS, to be named below
with open("/proc/self/maps") as maps:
    blas = sorted({line.split()[-1] for line in maps if "blas" in line.split()[-1].lower()})
model = models.load_detector(arch, weights)
rgb = np.load(image_path)
image = models.image_tensor(rgb)
times = []
with torch.no_grad():
    model([image])  # warm-up
    for _ in range(int(repeats)):
        start = time.perf_counter()
        out = model([image])
        times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "detections": len(out[0]["scores"]), "blas": blas,
                  "version": f"{torchvision.__version__} (torch {torch.__version__})"}))
"""


TIME = "/usr/bin/time"


def cpu_jiffies():
    """(non-idle, total) jiffies of the whole machine, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


JIFFY = 1.0 / os.sysconf("SC_CLK_TCK")


def others_busy(seconds):
    """Cores' worth of CPU that other processes use while this one sleeps for `seconds`."""
    busy0, _ = cpu_jiffies()
    start = time.perf_counter()
    time.sleep(seconds)
    busy1, _ = cpu_jiffies()
    return (busy1 - busy0) * JIFFY / (time.perf_counter() - start)


def peak_rss_of(command, env=None):
    """Runs a command under GNU time; returns (wall seconds, peak RSS in KB, stdout, cores used by
    other processes meanwhile).

    The peak is GNU time's %M: its child is forked from that small process, so the figure is the
    command's own. (A child spawned from this Python process would report at least this process's
    peak: Linux carries the old memory's high-water mark across exec into ru_maxrss.) The other
    processes' share is the machine's non-idle CPU time over the run less the command's own
    user + system time (%U %S, which count all its threads and waited-for children).
    """
    with tempfile.NamedTemporaryFile("r") as peak, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        timed = [TIME, "-f", "%M %U %S", "-o", peak.name] + list(command)
        busy0, _ = cpu_jiffies()
        start = time.perf_counter()
        pid = os.posix_spawn(TIME, timed, env if env is not None else os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                           (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status = os.waitpid(pid, 0)
        wall = time.perf_counter() - start
        busy1, _ = cpu_jiffies()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{' '.join(map(str, command))} failed with exit code {code}:\n{stderr}")
        peak_kb, user, system = peak.read().strip().splitlines()[-1].split()
    others = max(0.0, (busy1 - busy0) * JIFFY - float(user) - float(system)) / wall
    return wall, int(peak_kb), stdout, others


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
    # ORT's input: the [3, H, W] float32 tensor in [0, 1] that torchvision gets, raw little-endian
    image_f32 = os.path.join(directory, f"image_{height}x{width}.f32")
    models.image_tensor(rgb).numpy().astype("<f4").tofile(image_f32)
    return weights, image_npy, image_png, image_f32


def ort_graph(arch, weights, image_npy, directory, height, width, threads):
    """The cached ONNX export for this arch and image size (bench/ort_peer.py export); returns
    (onnx path, meta dict, reference outputs). Re-exports when the weights or recipe changed."""
    import ort_peer
    base = os.path.join(directory, f"ort_{arch}_{height}x{width}")
    stat = os.stat(weights)
    key = {"weights": os.path.abspath(weights), "weights_size": stat.st_size,
           "weights_mtime_ns": stat.st_mtime_ns, "recipe": ort_peer.RECIPE}
    meta = None
    if all(os.path.exists(base + ext) for ext in (".onnx", ".ref.npz", ".meta.json", ".key.json")):
        with open(base + ".key.json") as f:
            if json.load(f) == key:
                with open(base + ".meta.json") as f:
                    meta = json.load(f)
    if meta is None:
        print(f"{arch}: exporting to ONNX for {height}x{width} ...", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, ORT_PEER, "export", "--arch", arch, "--weights",
                                 weights, "--image-npy", image_npy, "--onnx", base + ".onnx",
                                 "--threads", str(threads)], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{arch}: ONNX export failed:\n{result.stderr[-4000:]}")
        meta = json.loads(result.stdout.strip().splitlines()[-1])
        if os.path.exists(base + ".ref64.npz"):
            os.remove(base + ".ref64.npz")  # the float64 reference of the old weights
        with open(base + ".key.json", "w") as f:
            json.dump(key, f)
        print(f"{arch}: exported at opset {meta['opset']}, eager resize {meta['resized'][0]}x"
              f"{meta['resized'][1]} fixed, in {time.perf_counter() - start:.0f} s", flush=True)
        for error in meta["export_errors"]:
            print(f"{arch}: note: {error.splitlines()[0][:200]}")
    return base + ".onnx", meta, ort_peer.load_npz(base + ".ref.npz")


def read_ort_outputs(path):
    import numpy as np
    types = {"float32": "<f4", "float64": "<f8", "int64": "<i8", "int32": "<i4"}
    with open(path) as f:
        saved = json.load(f)
    return {name: np.frombuffer(base64.b64decode(t["data"]), types[t["type"]]).reshape(t["dims"])
            for name, t in saved.items()}


def check_agreement(arch, args, weights, image_npy, directory, reference, outputs):
    """Prints the agreement line; on a poor one, the float64 view. Returns "" (agrees), "ILL-COND"
    (poor, but ORT is as close to float64 as torchvision float32 is) or "DISAGREE" (timed anyway
    under --allow-disagreement); otherwise refuses."""
    import ort_peer
    result = ort_peer.agreement(reference, outputs)
    print(f"agreement {arch}: ORT vs torchvision eager: {ort_peer.describe(result)}", flush=True)
    if result["fraction"] >= args.min_agreement:
        return ""
    out64 = os.path.join(directory, f"ort_{arch}_{args.height}x{args.width}.ref64.npz")
    if not os.path.exists(out64):  # cached beside the graph; removed when it is re-exported
        print(f"{arch}: below --min-agreement {args.min_agreement:.0%}: computing torchvision's "
              "float64 reference ...", flush=True)
        subprocess.run([sys.executable, ORT_PEER, "reference64", "--arch", arch, "--weights",
                        weights, "--image-npy", image_npy, "--out", out64, "--threads",
                        str(args.threads)], check=True, capture_output=True)
    reference64 = ort_peer.load_npz(out64)
    ort64 = ort_peer.agreement(reference64, outputs)
    tv64 = ort_peer.agreement(reference64, reference)
    print(f"agreement {arch}: ORT vs torchvision float64: {ort_peer.describe(ort64)}")
    print(f"agreement {arch}: torchvision float32 vs float64: {ort_peer.describe(tv64)}")
    if 1 - ort64["fraction"] <= 2 * (1 - tv64["fraction"]):
        print(f"{arch}: ill-conditioned weights: torchvision's own float32 misses "
              f"{1 - tv64['fraction']:.0%} of float64's detections and ORT {1 - ort64['fraction']:.0%}"
              " (at most twice that): ORT accepted, row flagged ILL-COND", flush=True)
        return "ILL-COND"
    message = (f"{arch}: ORT agrees with torchvision on only {result['fraction']:.0%} of detections "
               f"(--min-agreement {args.min_agreement:.0%}), and with float64 on "
               f"{ort64['fraction']:.0%} where torchvision float32 does on {tv64['fraction']:.0%}")
    if not args.allow_disagreement:
        print(f"refusing to time: {message}; --allow-disagreement times it anyway, flagged",
              file=sys.stderr)
        sys.exit(3)
    print(f"WARNING: {message}; timed anyway (--allow-disagreement), row flagged DISAGREE")
    return "DISAGREE"


class Busy:
    """Collects the other processes' CPU use for one arch and warns (or refuses) above the
    threshold."""

    def __init__(self, args, arch):
        self.args, self.arch, self.worst = args, arch, 0.0

    def note(self, cores, when):
        self.worst = max(self.worst, cores)
        if cores > self.args.busy_threshold:
            message = (f"!!! BUSY MACHINE: other processes used {cores:.2f} cores {when} "
                       f"({self.arch}); timings are not trustworthy !!!")
            print(message, file=sys.stderr, flush=True)
            if self.args.strict:
                print("refusing to time on a busy machine (--strict)", file=sys.stderr)
                sys.exit(4)

    def before(self, peer):
        self.note(others_busy(self.args.busy_sample), f"before {peer}'s timed section")

    @property
    def flagged(self):
        return self.worst > self.args.busy_threshold


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fpn-detect", required=True, help="the fpn_detect binary to measure")
    parser.add_argument("--arch", nargs="+", default=["maskrcnn_resnet50_fpn"], choices=ARCHS)
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS,
                        help="which peers run beside fpn (default: all)")
    parser.add_argument("--height", type=int, default=427)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", help="where weights, images and ONNX graphs go (default: a "
                        "temporary directory, removed afterwards)")
    parser.add_argument("--ort-dir", default=os.environ.get("FPN_ORT_DIR",
                                                            os.path.expanduser("~/.cache/fpn-ort")),
                        help="onnxruntime-node's install dir (bench/install_ort.sh puts it there)")
    parser.add_argument("--min-agreement", type=float, default=0.95,
                        help="fraction of ORT's detections that must match torchvision's")
    parser.add_argument("--allow-disagreement", action="store_true",
                        help="time ORT even when it disagrees with torchvision (row flagged)")
    parser.add_argument("--busy-threshold", type=float, default=0.25,
                        help="cores used by other processes above which a row is BUSY")
    parser.add_argument("--busy-sample", type=float, default=1.5,
                        help="seconds of /proc/stat sampling before each timed section")
    parser.add_argument("--strict", action="store_true", help="refuse on a busy machine")
    args = parser.parse_args()
    if not os.access(args.fpn_detect, os.X_OK):
        sys.exit(f"--fpn-detect: {args.fpn_detect} is not an executable file")
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"{TIME} is missing (apt-get install time): it measures each process's peak RSS")
    use_tv, use_ort = "torchvision" in args.peers, "ort" in args.peers

    baseline = None
    if use_ort:
        install = subprocess.run(["bash", INSTALL_ORT], env=dict(os.environ, FPN_ORT_DIR=args.ort_dir),
                                 capture_output=True, text=True)
        if install.returncode != 0:
            sys.exit(f"bench/install_ort.sh failed:\n{install.stderr[-4000:]}")
        wall, rss, out, _ = peak_rss_of(["node", ORT_RUN, "--ort-dir", args.ort_dir, "baseline"])
        baseline = (wall, rss, json.loads(out.strip().splitlines()[-1])["version"])

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.work_dir or scratch
        os.makedirs(directory, exist_ok=True)
        rows = []
        tv_version = None
        for arch in args.arch:
            weights, image_npy, image_png, image_f32 = make_inputs(arch, directory, args.height,
                                                                   args.width)
            env = dict(os.environ, FPN_TOOLS=TOOLS, OMP_NUM_THREADS=str(args.threads))  # torch's OpenMP
            busy = Busy(args, arch)
            row = {"arch": arch, "agreement": ""}

            if use_ort:  # first: its agreement is checked before any of this arch's timing
                onnx_path, meta, reference = ort_graph(arch, weights, image_npy, directory,
                                                       args.height, args.width, args.threads)
                outputs_path = os.path.join(directory, f"ort_{arch}_{args.height}x{args.width}"
                                            ".outputs.json")
                busy.before("ORT")
                _, rss, out, others = peak_rss_of(
                    ["node", ORT_RUN, "--ort-dir", args.ort_dir, "run", "--model", onnx_path,
                     "--input", image_f32, "--shape", ",".join(map(str, meta["input_shape"])),
                     "--threads", str(args.threads), "--repeats", str(args.repeats),
                     "--outputs", outputs_path], env)
                busy.note(others, "during ORT's run")
                ort = json.loads(out.strip().splitlines()[-1])
                row["agreement"] = check_agreement(arch, args, weights, image_npy, directory, reference,
                                               read_ort_outputs(outputs_path))
                row.update(ort_s=statistics.median(ort["times"]), ort_create=ort["create"],
                           ort_rss=rss, ort_n=ort["detections"], opset=meta["opset"])

            if use_tv:
                busy.before("torchvision")
                _, rss, out, others = peak_rss_of(
                    [sys.executable, "-c", PEER, arch, weights, image_npy, str(args.repeats),
                     str(args.threads)], env)
                busy.note(others, "during torchvision's run")
                peer = json.loads(out.strip().splitlines()[-1])
                if not any("openblas" in path.lower() for path in peer["blas"]):
                    sys.exit(f"refusing to compare: torch's BLAS is {peer['blas'] or 'unknown'}, "
                             "not OpenBLAS (apt-get install libopenblas0-pthread); the reference "
                             "BLAS makes torchvision's box head ~50x slower")
                tv_version = peer["version"]
                row.update(tv_s=statistics.median(peer["times"]), tv_rss=rss,
                           tv_n=peer["detections"])

            busy.before("fpn")
            fpn_times, fpn_inference, fpn_rss = [], [], 0
            json_path = os.path.join(directory, f"{arch}.json")
            for _ in range(args.repeats):
                wall, rss, out, others = peak_rss_of(
                    [args.fpn_detect, "--arch", arch, "--weights", weights, "--json", json_path,
                     "--threads", str(args.threads), image_png], env)
                busy.note(others, "during fpn_detect")
                fpn_times.append(wall)
                # "<image>, WxH: N detections with score > 0.05 (0.31 s)": its detect call alone
                inference = re.search(r"detections.*\((\d+(?:\.\d+)?) s\)", out)
                if inference:
                    fpn_inference.append(float(inference.group(1)))
                fpn_rss = max(fpn_rss, rss)
            with open(json_path) as f:
                row.update(fpn_s=statistics.median(fpn_times), fpn_rss=fpn_rss,
                           fpn_n=len(json.load(f)))
            if len(fpn_inference) == len(fpn_times):
                row["fpn_inference"] = statistics.median(fpn_inference)
            row["busy"] = busy.worst
            row["flags"] = " ".join(filter(None, ["BUSY" if busy.flagged else "",
                                                  row["agreement"]]))
            rows.append(row)

    print_table(args, rows, tv_version, baseline)


def print_table(args, rows, tv_version, baseline):
    print()
    print(f"{args.height}x{args.width} image, {args.threads} threads, median of {args.repeats}; "
          "fpn_detect whole process; peers in process after a warm-up; peak RSS of each process")
    if tv_version:
        print(f"torchvision {tv_version}, eager")
    if baseline:
        masks = any(row["arch"].startswith("maskrcnn") for row in rows)
        print(f"ONNX Runtime {baseline[2]} (onnxruntime-node, CPU EP, opset "
              f"{'/'.join(sorted({str(r['opset']) for r in rows if 'opset' in r}))}, memory pattern"
              f" off{', Mask R-CNN graphs end at the 28x28 masks' if masks else ''}); bare node + "
              f"ORT (module loaded, no session): {baseline[1] / 1024:.0f} MB peak RSS, "
              f"{baseline[0]:.2f} s, included in ORT MB")
    width = max(26, max(len(row["arch"]) for row in rows))

    def cell(row, key, fmt, scale=1.0):
        return format(row[key] / scale, fmt) if key in row else format("-", ">" + fmt.split(".")[0])

    def ratio(row, a, b):
        return f"{row[a] / row[b]:.2f}x" if a in row and b in row else "-"

    print(f"{'arch':{width}} {'fpn s':>6} {'(det)':>6} {'tv s':>6} {'ORT s':>6} {'(init)':>6} {'fpn/tv':>6} "
          f"{'fpn/ORT':>7}  {'fpn MB':>6} {'tv MB':>6} {'ORT MB':>6} {'fpn/ORT':>7}  "
          f"{'dets fpn/tv/ORT':>15}  {'others':>6}  flags")
    for row in rows:
        counts = "/".join(str(row[k]) if k in row else "-" for k in ("fpn_n", "tv_n", "ort_n"))
        print(f"{row['arch']:{width}} {cell(row, 'fpn_s', '6.2f')} "
              f"{cell(row, 'fpn_inference', '6.2f')} {cell(row, 'tv_s', '6.2f')} "
              f"{cell(row, 'ort_s', '6.2f')} {cell(row, 'ort_create', '6.2f')} "
              f"{ratio(row, 'fpn_s', 'tv_s'):>6} {ratio(row, 'fpn_s', 'ort_s'):>7}  "
              f"{cell(row, 'fpn_rss', '6.0f', 1024)} {cell(row, 'tv_rss', '6.0f', 1024)} "
              f"{cell(row, 'ort_rss', '6.0f', 1024)} {ratio(row, 'fpn_rss', 'ort_rss'):>7}  "
              f"{counts:>15}  {row['busy']:6.2f}  {row['flags']}")
    print("fpn s: fpn_detect's whole process (start, load, decode, detect, JSON), (det): its detect "
          "call alone, cold; tv s, ORT s: in-process runs after a warm-up; (init): ORT session "
          "create; ratios are of fpn s.\nothers: the most cores other processes used during or "
          f"just before this arch's timed sections (BUSY above {args.busy_threshold}); ILL-COND: "
          "see the agreement lines")


if __name__ == "__main__":
    main()
