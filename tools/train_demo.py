#!/usr/bin/python3
"""Train the demo Mask R-CNN (fpn_tools/demo_model.py) on procedural shape scenes.

From random initialisation, on the CPU, in about half an hour on two cores: every step draws
fresh scenes from fpn_tools/shapes.py, so there is no data set to download or overfit. At the
end the model is scored on held-out scenes (seeds never used in training) with fpn_tools/
evaluate.py, and written to --out-dir:
    demo_shapes_maskrcnn.safetensors  the weights in F16, torchvision's names, with metadata
    demo_shapes_training.log          losses, timings, held-out AP@0.5 per class
    shapes_scene.png, .json           a held-out 480x640 scene and its ground truth

    /usr/bin/python3 tools/train_demo.py --minutes 32   (the shipped run; see the log)
"""
import argparse
import io
import json
import math
import os
import random
import sys
import time

# Idle OpenMP threads must sleep, not spin: on a shared two-core machine a spinning thread
# steals the core its partner needs, and measured steps ran 10x slower. Read by libgomp when
# torch loads it, hence before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fpn_tools import demo_model, models, shapes  # noqa: E402
from fpn_tools.evaluate import Evaluator, box_iou  # noqa: E402
from fpn_tools.safetensors_io import save_file, write_bytes_atomically  # noqa: E402

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_NAME = "demo_shapes_maskrcnn.safetensors"
LOG_NAME = "demo_shapes_training.log"
SCENE_NAME = "shapes_scene"

# Scene seeds: held-out and demo scenes lie below 10^9, training scenes of --seed s at
# (s + 1) * 10^9 and up, so no training scene is ever scored or shown.
HELD_OUT_SEED_BASE = 900_000_000
DEMO_SEED_BASE = 910_000_000
TRAIN_SEED_STRIDE = 1_000_000_000
# Scene sides for training and held-out scoring; the model resizes to a short side of 320
# anyway, so this varies aspect ratio and, through shapes.py's size range, object scale.
SIDE_RANGE = (256, 448)
DEMO_SIZE = (480, 640)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=os.path.join(PROJECT, "examples", "data"))
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="training wall-time budget; the schedule follows elapsed time "
                             "(default 30 unless --steps is given)")
    budget.add_argument("--steps", type=int, default=None,
                        help="train exactly this many steps (reproducible step for step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--rois-per-image", type=int, default=256,
                        help="RoIs sampled per image for the box and mask heads in training "
                             "(torchvision's default is 512; at most a quarter are objects, and "
                             "the mask head's cost, most of a step's, grows with those; 256 "
                             "gave fewer misclassified duplicates than 128 in the same time)")
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--clip-norm", type=float, default=10.0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=200, help="held-out scenes to score")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.minutes is None and args.steps is None:
        args.minutes = 30.0
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    return args


def png_bytes(rgb):
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def target_of(objects, height, width):
    if not objects:
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros((0, height, width), dtype=torch.uint8)}
    return {"boxes": torch.tensor([o["box"] for o in objects], dtype=torch.float32),
            "labels": torch.tensor([o["label"] for o in objects], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack([o["mask"] for o in objects])).to(torch.uint8)}


def scene_sides(rng):
    return tuple(int(side) for side in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))


class Log:
    """Prints each line at once (the run is watched through nohup) and keeps it for the file."""

    def __init__(self):
        self.lines = []

    def __call__(self, text=""):
        for line in str(text).split("\n"):
            print(line, flush=True)
            self.lines.append(line)

    def text(self):
        return "\n".join(self.lines) + "\n"


def learning_rate(args, step, progress):
    """Linear warm-up over the first steps, then cosine decay to 2% of the peak at the end."""
    warmup = min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps > 0 else 1.0
    cosine = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * warmup * cosine


def make_optimizer(model, args):
    # No weight decay on BatchNorm parameters and biases (all the 1-D tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)


def training_step(model, optimizer, parameters, clip_norm, images, targets, step, window):
    """One optimiser step on a batch: the losses summed, backward, gradients clipped to clip_norm,
    step; each loss, their sum ("loss") and the gradient norm added into window (a dict of sums).
    step (0-based) names a non-finite loss's step in the error."""
    losses = model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {step}: non-finite loss "
                                 + ", ".join(f"{k} {v.item():.4g}" for k, v in losses.items()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip_norm))
    optimizer.step()
    for name, value in losses.items():
        window[name] = window.get(name, 0.0) + value.item()
    window["loss"] = window.get("loss", 0.0) + loss.item()
    window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm


def log_window(log, step, seconds, lr, window, window_steps):
    """One log line: the step (1-based), seconds since the start, the learning rate and the
    window's mean of each sum."""
    means = {name: total / window_steps for name, total in window.items()}
    parts = [f"step {step:5d}", f"{seconds:7.1f}s", f"lr {lr:.2e}", f"loss {means.pop('loss'):.4f}"]
    parts += [f"{name.removeprefix('loss_')} {value:.4f}" for name, value in means.items()]
    log("  ".join(parts))


def train(model, args, log):
    optimizer = make_optimizer(model, args)
    size_rng = np.random.default_rng([args.seed, 1])
    parameters = [p for p in model.parameters() if p.requires_grad]
    # A training-time sampling choice only: inference and the exported weights do not see it.
    model.roi_heads.fg_bg_sampler.batch_size_per_image = args.rois_per_image
    model.train()
    start = time.monotonic()
    window = {}
    window_steps = 0
    step = 0
    while True:
        elapsed = time.monotonic() - start
        if args.steps is not None:
            if step >= args.steps:
                break
            progress = step / args.steps
        else:
            if elapsed >= args.minutes * 60:
                break
            progress = elapsed / (args.minutes * 60)
        lr = learning_rate(args, step, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        images, targets = [], []
        for i in range(args.batch_size):
            height, width = scene_sides(size_rng)
            rgb, objects = shapes.make_scene(
                (args.seed + 1) * TRAIN_SEED_STRIDE + step * args.batch_size + i, height, width)
            images.append(models.image_tensor(rgb))
            targets.append(target_of(objects, height, width))

        training_step(model, optimizer, parameters, args.clip_norm, images, targets, step, window)
        window_steps += 1
        step += 1
        if step % args.log_every == 0 or step == 1:
            log_window(log, step, time.monotonic() - start, lr, window, window_steps)
            window, window_steps = {}, 0
    seconds = time.monotonic() - start
    log(f"trained {step} steps ({step * args.batch_size} scenes) in {seconds:.1f}s "
        f"({seconds / max(step, 1):.3f}s per step)")
    return step, seconds


def detections(model, rgb):
    """torchvision's eval-mode output for one image, as numpy, masks thresholded at 0.5."""
    with torch.no_grad():
        output = model([models.image_tensor(rgb)])[0]
    return {"boxes": output["boxes"].numpy(), "scores": output["scores"].numpy(),
            "labels": output["labels"].numpy(), "masks": (output["masks"][:, 0] > 0.5).numpy()}


def score_held_out(model, count):
    model.eval()
    size_rng = np.random.default_rng([HELD_OUT_SEED_BASE, 1])
    evaluator = Evaluator(len(shapes.CLASS_NAMES))
    num_objects = 0
    for k in range(count):
        height, width = scene_sides(size_rng)
        rgb, objects = shapes.make_scene(HELD_OUT_SEED_BASE + k, height, width)
        num_objects += len(objects)
        image = detections(model, rgb)
        image.update(gt_boxes=np.array([o["box"] for o in objects]).reshape(-1, 4),
                     gt_labels=np.array([o["label"] for o in objects], np.int64),
                     gt_masks=np.array([o["mask"] for o in objects], bool).reshape(
                         -1, height, width))
        evaluator.add(image)
    return evaluator.result(), num_objects


def pick_demo_scene():
    """The first demo seed whose 480x640 scene shows 6-8 objects of at least four classes,
    with boxes that do not touch, none small and one large, all in strong contrast: a picture that shows the detector
    working at several scales rather than probing its limits."""
    height, width = DEMO_SIZE
    for k in range(10_000):
        rgb, objects = shapes.make_scene(DEMO_SEED_BASE + k, height, width)
        if not 6 <= len(objects) <= 8 or len({o["label"] for o in objects}) < 4:
            continue
        boxes = np.array([o["box"] for o in objects])
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
        rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        touching = np.all(rb >= lt, axis=2) & ~np.eye(len(boxes), dtype=bool)
        if sides.min() < 24 or sides.max() < 120 or touching.any():
            continue
        # Strong contrast: each object's mean colour far from that of the rest of its box,
        # which, with no boxes touching, is background.
        contrast = []
        for o in objects:
            x1, y1, x2, y2 = (int(v) for v in o["box"])
            inside = o["mask"][y1:y2, x1:x2]
            crop = rgb[y1:y2, x1:x2].astype(np.float64)
            contrast.append(np.linalg.norm(crop[inside].mean(0) - crop[~inside].mean(0)))
        if min(contrast) >= 120:
            return DEMO_SEED_BASE + k, rgb, objects
    raise RuntimeError("no demo scene found")


def format_ap(result, log):
    names = shapes.CLASS_NAMES
    log(f"{'class':<10} {'box AP50':>9} {'mask AP50':>9}")
    for label in range(1, len(names)):
        box = result["box"]["per_class"].get(label, float("nan"))
        mask = result["mask"]["per_class"].get(label, float("nan"))
        log(f"{names[label]:<10} {box:9.4f} {mask:9.4f}")
    log(f"{'mean':<10} {result['box']['mean']:9.4f} {result['mask']['mean']:9.4f}")


def show_demo_detections(model, rgb, objects, log, threshold=0.5):
    """Detections above `threshold` next to the ground truth; returns True when every object
    is found with its label (box IoU >= 0.5) and nothing else scores above the threshold."""
    names = shapes.CLASS_NAMES
    found = detections(model, rgb)
    keep = found["scores"] >= threshold
    boxes, scores, labels = found["boxes"][keep], found["scores"][keep], found["labels"][keep]
    log(f"detections with score >= {threshold}:")
    for box, score, label in zip(boxes, scores, labels):
        log(f"  {names[label]:<9} {score:.3f}  [{', '.join(f'{v:6.1f}' for v in box)}]")
    log("ground truth, with the best same-label detection:")
    gt_boxes = np.array([o["box"] for o in objects]).reshape(-1, 4)
    iou = box_iou(gt_boxes, boxes)
    used = set()
    all_found = True
    for g, obj in enumerate(objects):
        same = [d for d in range(len(boxes)) if labels[d] == obj["label"] and d not in used]
        best = max(same, key=lambda d: iou[g, d], default=None)
        if best is not None and iou[g, best] >= 0.5:
            used.add(best)
            match = f"found, score {scores[best]:.3f}, IoU {iou[g, best]:.3f}"
        else:
            all_found = False
            match = "MISSED"
        log(f"  {names[obj['label']]:<9} [{', '.join(f'{v:6.1f}' for v in obj['box'])}]  {match}")
    extra = len(boxes) - len(used)
    log(f"{len(used)}/{len(objects)} objects found, {extra} other detections above {threshold}")
    return all_found and extra == 0


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    log = Log()
    log(f"command: {' '.join([os.path.relpath(sys.argv[0], PROJECT)] + sys.argv[1:])}")
    log(f"seed {args.seed}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{args.threads} threads")
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.minutes} minutes"
    log(f"budget {budget}; batch {args.batch_size} scenes of {SIDE_RANGE[0]}..{SIDE_RANGE[1]} "
        f"px a side, {args.rois_per_image} RoIs per image; AdamW lr {args.lr} weight decay {args.weight_decay}, warm-up "
        f"{args.warmup_steps} steps, cosine decay, gradient norm clipped at {args.clip_norm}")

    model = demo_model.build_demo_model()
    log(f"model: {demo_model.DEMO_METADATA['backbone']}, "
        f"{sum(p.numel() for p in model.parameters())} parameters")
    steps, seconds = train(model, args, log)

    # Score exactly what is shipped: the weights rounded to F16.
    tensors = demo_model.export_state_dict(model, np.float16)
    state = model.state_dict()
    state.update({name: torch.from_numpy(array.astype(np.float32))
                  for name, array in tensors.items()})
    model.load_state_dict(state)
    start = time.monotonic()
    result, num_objects = score_held_out(model, args.held_out)
    log(f"held-out: {args.held_out} scenes (seeds {HELD_OUT_SEED_BASE}..."
        f"{HELD_OUT_SEED_BASE + args.held_out - 1}), {num_objects} objects, F16 weights, "
        f"AP at IoU 0.5 ({time.monotonic() - start:.1f}s)")
    format_ap(result, log)

    metadata = dict(demo_model.DEMO_METADATA)
    metadata.update(box_ap50=f"{result['box']['mean']:.4f}",
                    mask_ap50=f"{result['mask']['mean']:.4f}",
                    torchvision=torchvision.__version__)
    weights_path = os.path.join(args.out_dir, WEIGHTS_NAME)
    save_file(tensors, weights_path, metadata=metadata)
    log(f"wrote {weights_path}: {os.path.getsize(weights_path)} bytes, {len(tensors)} tensors")

    seed, rgb, objects = pick_demo_scene()
    write_bytes_atomically(os.path.join(args.out_dir, SCENE_NAME + ".png"), png_bytes(rgb))
    truth = [{"label": o["label"], "name": shapes.CLASS_NAMES[o["label"]], "box": o["box"]}
             for o in objects]
    write_bytes_atomically(os.path.join(args.out_dir, SCENE_NAME + ".json"),
                 ("[\n" + ",\n".join(" " + json.dumps(t) for t in truth) + "\n]\n").encode())
    log(f"demo scene: seed {seed}, {DEMO_SIZE[0]}x{DEMO_SIZE[1]}, {len(objects)} objects")

    # Check the file, not the in-memory model: a fresh model loaded from what was written.
    reloaded = demo_model.load_demo_model(weights_path)
    shown = np.asarray(Image.open(os.path.join(args.out_dir, SCENE_NAME + ".png")).convert("RGB"))
    all_found = show_demo_detections(reloaded, shown, objects, log)
    log("demo scene: " + ("every object found, nothing else" if all_found
                          else "NOT every object found cleanly"))
    write_bytes_atomically(os.path.join(args.out_dir, LOG_NAME), log.text().encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
