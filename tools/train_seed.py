#!/usr/bin/python3
"""Train one of the seed experiment's models (fpn_tools/seed_models.py) and score it.

The RPN variants (fpn, c4, p2, topdown_no_lateral, lateral_no_topdown) and the segment-proposal
network train on tools/train_demo.py's scenes (the same seeds, sizes and batches for a given
--seed) with its optimiser and schedule (AdamW, linear warm-up, cosine decay, gradient clipping),
for a fixed number of steps, so every variant sees the same data in the same order. Then the
F16 weights are scored on train_demo.py's held-out scenes with fpn_tools/recall.py: box AR of
the proposals (segments: mask AR, and box AR of the masks' boxes) at 10, 100, 1000 proposals and
by object size. Written to --out-dir (examples/data/seed):
    <variant>.safetensors  F16 weights, torchvision's names, metadata (seed_models.seed_metadata)
    <variant>.log          the command, losses, timings, held-out AR
    results.json           the held-out AR of every variant scored so far (this one replaced)

    nice -n 19 /usr/bin/python3 tools/train_seed.py --variant fpn        (the shipped runs)
    /usr/bin/python3 tools/train_seed.py --variant fpn --evaluate-only   (rescore a file)
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # see train_demo.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_demo  # noqa: E402
from fpn_tools import models, seed_models, shapes  # noqa: E402
from fpn_tools.demo_model import export_state_dict  # noqa: E402
from fpn_tools.evaluate import box_iou  # noqa: E402
from fpn_tools.recall import AREA_RANGES, MAX_DETS, RecallEvaluator, mask_iou_crops  # noqa: E402
from fpn_tools.safetensors_io import save_file, write_bytes_atomically  # noqa: E402

PROJECT = train_demo.PROJECT
OUT_DIR = os.path.join(PROJECT, "examples", "data", "seed")
RESULTS_NAME = "results.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=seed_models.VARIANTS)
    parser.add_argument("--out-dir", default=OUT_DIR)
    parser.add_argument("--steps", type=int, default=800,
                        help="training steps (800 x 4 = 3200 scenes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--clip-norm", type=float, default=10.0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=200, help="held-out scenes to score")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--evaluate-only", action="store_true",
                        help="score the variant's file in --out-dir; do not train")
    parser.add_argument("--table", action="store_true",
                        help="print --out-dir's results.json as the Markdown tables of "
                             "tools/seed_results.md; do not train")
    args = parser.parse_args(argv)
    if args.variant is None and not args.table:
        parser.error("--variant is required unless --table is given")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    return args


def training_batch(args, step, size_rng, with_masks):
    """train_demo.train's batch of this step: the same scene seeds and sizes."""
    images, targets = [], []
    for i in range(args.batch_size):
        height, width = train_demo.scene_sides(size_rng)
        rgb, objects = shapes.make_scene(
            (args.seed + 1) * train_demo.TRAIN_SEED_STRIDE + step * args.batch_size + i,
            height, width)
        images.append(models.image_tensor(rgb))
        target = train_demo.target_of(objects, height, width)
        if not with_masks:
            del target["masks"]  # the RPN reads boxes only; resizing masks would cost time
        targets.append(target)
    return images, targets


def train(model, args, log):
    optimizer = train_demo.make_optimizer(model, args)
    size_rng = np.random.default_rng([args.seed, 1])
    parameters = [p for p in model.parameters() if p.requires_grad]
    model.train()
    start, cpu_start = time.monotonic(), time.process_time()
    window, window_steps = {}, 0
    for step in range(args.steps):
        lr = train_demo.learning_rate(args, step, step / args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, targets = training_batch(args, step, size_rng, args.variant == "segments")
        train_demo.training_step(model, optimizer, parameters, args.clip_norm, images, targets,
                                 step, window)
        window_steps += 1
        if (step + 1) % args.log_every == 0 or step == 0:
            train_demo.log_window(log, step + 1, time.monotonic() - start, lr, window, window_steps)
            window, window_steps = {}, 0
    seconds, cpu = time.monotonic() - start, time.process_time() - cpu_start
    # CPU seconds too: the runs were niced beside other work, so wall time overstates them.
    log(f"trained {args.steps} steps ({args.steps * args.batch_size} scenes) in {seconds:.1f}s "
        f"({seconds / max(args.steps, 1):.3f}s per step), {cpu:.1f} CPU seconds")
    return seconds, cpu


def held_out_scenes(count):
    """train_demo.score_held_out's scenes: (rgb, objects), seeds disjoint from training."""
    size_rng = np.random.default_rng([train_demo.HELD_OUT_SEED_BASE, 1])
    for k in range(count):
        height, width = train_demo.scene_sides(size_rng)
        yield shapes.make_scene(train_demo.HELD_OUT_SEED_BASE + k, height, width)


@torch.no_grad()
def score_held_out(model, count):
    """{"box": AR table[, "mask": AR table], "objects": ..., "objects_by_size": ...}."""
    model.eval()
    boxes_ar, masks_ar = RecallEvaluator(), RecallEvaluator()
    sizes = {name: 0 for name in AREA_RANGES}
    num_proposals = []
    for rgb, objects in held_out_scenes(count):
        gt_boxes = np.array([o["box"] for o in objects]).reshape(-1, 4)
        gt_masks = np.array([o["mask"] for o in objects], bool).reshape((-1,) + rgb.shape[:2])
        areas = gt_masks.reshape(len(gt_masks), -1).sum(1)
        for name, (low, high) in AREA_RANGES.items():
            sizes[name] += int(((areas >= low) & (areas <= high)).sum())
        output = model([models.image_tensor(rgb)])[0]
        scores = output["scores"].numpy()
        num_proposals.append(len(scores))
        boxes_ar.add(box_iou(output["boxes"].numpy(), gt_boxes), scores, areas)
        if "crops" in output:
            masks_ar.add(mask_iou_crops(output["crops"], gt_masks), scores, areas)
    result = {"box": with_recall_at(boxes_ar), "objects": sizes["all"],
              "objects_by_size": sizes, "held_out_scenes": count,
              "mean_proposals": float(np.mean(num_proposals))}
    if model.variant == "segments":
        result["mask"] = with_recall_at(masks_ar)
    return result


def with_recall_at(evaluator):
    """The AR table plus recall at IoU 0.5 and 0.75 with 1000 proposals ("R50@1000",
    "R75@1000"): where AR falls, these say whether objects are missed or poorly located."""
    table = evaluator.result()
    values = evaluator.recall("all", MAX_DETS[-1])
    for threshold in (0.5, 0.75):
        index = int(np.argmin(np.abs(evaluator.thresholds - threshold)))
        table[f"R{round(threshold * 100)}@{MAX_DETS[-1]}"] = (
            None if values is None else float(values[index]))
    return table


def format_recall(result, log):
    kinds = ["mask", "box"] if "mask" in result else ["box"]
    log(f"{'':<6} " + " ".join(f"{f'AR@{k}':>8}" for k in MAX_DETS)
        + " " + " ".join(f"{f'AR_{a[0]}@{MAX_DETS[-1]}':>9}" for a in ("small", "medium",
                                                                      "large")))
    for kind in kinds:
        table = result[kind]
        cells = [table[f"AR@{k}"] for k in MAX_DETS]
        cells += [table[f"AR_{a}@{MAX_DETS[-1]}"] for a in ("small", "medium", "large")]
        log(f"{kind:<6} " + " ".join(f"{c:8.4f}" for c in cells[:3]) + " "
            + " ".join(f"{c:9.4f}" for c in cells[3:]))


def update_results(path, variant, entry):
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    results[variant] = entry
    ordered = {v: results[v] for v in seed_models.VARIANTS if v in results}
    write_bytes_atomically(path, (json.dumps(ordered, indent=1) + "\n").encode())


def markdown_tables(results):
    """The box AR table of the RPN variants and the segment AR table, in percent."""
    def cell(value):
        return "-" if value is None else f"{100 * value:.1f}"

    lines = ["| RPN variant | AR@100 | AR@1000 | AR_s@1000 | AR_m@1000 | AR_l@1000 "
             "| R50@1000 | R75@1000 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in seed_models.RPN_VARIANTS:
        if variant in results:
            box = results[variant]["box"]
            keys = ["AR@100", "AR@1000", "AR_small@1000", "AR_medium@1000", "AR_large@1000",
                    "R50@1000", "R75@1000"]
            lines.append(f"| {variant} | " + " | ".join(cell(box[k]) for k in keys) + " |")
    if "segments" in results:
        lines += ["", "| segments | AR@10 | AR@100 | AR@1000 | AR_s@1000 | AR_m@1000 "
                  "| AR_l@1000 | R50@1000 | R75@1000 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for kind in ("mask", "box"):
            table = results["segments"][kind]
            keys = ["AR@10", "AR@100", "AR@1000", "AR_small@1000", "AR_medium@1000",
                    "AR_large@1000", "R50@1000", "R75@1000"]
            lines.append(f"| {kind} | " + " | ".join(cell(table[k]) for k in keys) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.table:
        with open(os.path.join(args.out_dir, RESULTS_NAME)) as f:
            print(markdown_tables(json.load(f)))
        return 0
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    weights_path = os.path.join(args.out_dir, f"{args.variant}.safetensors")
    log = train_demo.Log()
    if args.evaluate_only:
        model = seed_models.load_seed_model(weights_path)
        entry = json.loads(model.seed_metadata.get("training", "{}"))
    else:
        log(f"command: {' '.join([os.path.relpath(sys.argv[0], PROJECT)] + sys.argv[1:])}")
        log(f"seed {args.seed}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"{args.threads} threads")
        log(f"{args.steps} steps, batch {args.batch_size} scenes of "
            f"{train_demo.SIDE_RANGE[0]}..{train_demo.SIDE_RANGE[1]} px a side (train_demo.py's); "
            f"AdamW lr {args.lr} weight decay {args.weight_decay}, warm-up {args.warmup_steps} "
            f"steps, cosine decay, gradient norm clipped at {args.clip_norm}")
        model = seed_models.build_seed_model(args.variant)
        log(f"model: {args.variant}, {sum(p.numel() for p in model.parameters())} parameters")
        seconds, cpu = train(model, args, log)
        # Score exactly what is shipped: the weights rounded to F16, read back from the file.
        tensors = export_state_dict(model, np.float16)
        entry = {"steps": args.steps, "scenes": args.steps * args.batch_size,
                 "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1),
                 "seed": args.seed}
        metadata = seed_models.seed_metadata(args.variant)
        metadata.update(torchvision=torchvision.__version__, training=json.dumps(entry))
        save_file(tensors, weights_path, metadata=metadata)
        log(f"wrote {os.path.relpath(weights_path, PROJECT)}: {os.path.getsize(weights_path)} "
            f"bytes, {len(tensors)} tensors")
        model = seed_models.load_seed_model(weights_path)
    # "scenes" in the weights' metadata counts training scenes; results.json says which.
    entry["train_scenes"] = entry.pop("scenes", None)
    start = time.monotonic()
    result = score_held_out(model, args.held_out)
    base = train_demo.HELD_OUT_SEED_BASE
    log(f"held-out: {args.held_out} scenes (seeds {base}...{base + args.held_out - 1}), "
        f"{result['objects']} objects (by mask area: {result['objects_by_size']['small']} small, "
        f"{result['objects_by_size']['medium']} medium, {result['objects_by_size']['large']} "
        f"large), F16 weights, {result['mean_proposals']:.0f} proposals per image on average "
        f"({time.monotonic() - start:.1f}s)")
    format_recall(result, log)
    entry.update(result)
    update_results(os.path.join(args.out_dir, RESULTS_NAME), args.variant, entry)
    if not args.evaluate_only:
        write_bytes_atomically(os.path.join(args.out_dir, f"{args.variant}.log"),
                               log.text().encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
