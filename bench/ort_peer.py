#!/usr/bin/python3
"""The ONNX Runtime peer of bench/compare_peers.py: export a torchvision detector to ONNX for one
fixed image, and check ORT's outputs against torchvision eager before any ORT timing is trusted.

    /usr/bin/python3 bench/ort_peer.py export --arch A --weights W.safetensors \
        --image-npy image.npy --onnx out.onnx          # also writes out.ref.npz and out.meta.json
    /usr/bin/python3 bench/ort_peer.py reference64 ... # the same graph's outputs in float64

compare_peers.py runs `export` (and, when agreement is poor, `reference64`) in a child python so
that torch never loads into its own process, and imports this module (numpy only) for `agreement`.

The export (torch 1.13's tracing exporter, torchvision 0.14.1):
- Weights: the builder with weights=None, weights_backbone=None (tools/fpn_tools/models.py
  build_detector), then load_state_dict of the same seeded safetensors fpn and torchvision run.
- Opset 11 (trap 1). torchvision 0.14 registers RoiAlign without the coordinate_transformation_mode
  attribute that opset 16 added; ORT then defaults to half_pixel and every region moves by half a
  pixel. RoiAlign-10 (opsets 10..15) has no such attribute and means output_half_pixel, i.e.
  aligned=False: correct. If opset 11 fails to export, opsets 12..15 are tried in turn (same
  RoiAlign); nothing from 16 on is tried, since that needs the attribute fixed in the graph.
  (MobileNetV3's Hardswish exports at opset 11 as x * HardSigmoid(x); Hardsigmoid as HardSigmoid.)
- The resize size (trap 2): traced, GeneralizedRCNNTransform computes the resized size in float32
  inside the graph (427x640 -> 800x1199) while eager torchvision computes it in float64 (799x1199).
  The eager size is taken from model.transform on the real image and set as the transform's
  fixed_size before export, so the graph resizes exactly as eager does for this image (and the
  graph only serves this image size: it is cached per arch and image size).
- Masks (trap 3): torchvision's exported mask paste is a Loop that re-concatenates its whole result
  every iteration (quadratic: half the run time and a 4 GB peak). The exported graph ends at the
  28x28 mask probabilities (N x 1 x 28 x 28): the wrapper below runs transform, backbone, RPN and
  ROI heads, maps boxes back to the original image, and never pastes. fpn keeps masks over their
  boxes too, so both sides stop at the same place.
- The graph's outputs: boxes (N x 4, original image coordinates), labels (int64), scores, and for
  Mask R-CNN masks (N x 1 x 28 x 28 probabilities).

The reference (`<onnx>.ref.npz`) is the same wrapper run eagerly on the same image in float32; the
export checks that it gives exactly the boxes, labels and scores of plain model([image]), so the
fixed size and the cut at 28x28 change nothing torchvision would have produced.

Agreement: detections are matched greedily in the reference's score order to the unmatched ORT
detection of the same label with the highest box IoU; a match needs IoU > 0.9. The fraction
matched is matches / max(count ORT, count reference); compare_peers.py refuses below 0.95 unless
--allow-disagreement. Seeded random weights with calibrated BatchNorm can be ill-conditioned (near
ties in scores decide which boxes survive NMS and the top 100), so on a poor agreement
compare_peers.py also computes the float64 reference and prints how well torchvision's own
float32 and ORT each agree with it.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(HERE, "..", "tools")
sys.path.insert(0, TOOLS)
from fpn_tools.evaluate import box_iou  # noqa: E402 (IoU of x1y1x2y2 boxes, float64)
RECIPE = 1  # bump when the export changes: cached graphs with another recipe are re-exported
OPSETS = (11, 12, 13, 14, 15)  # RoiAlign-10 semantics (output_half_pixel) in all of them
IOU_MATCH = 0.9
OUTPUTS = ("boxes", "labels", "scores", "masks")


# ----------------------------------------------------------------------------------------------
# Agreement (numpy only: imported by compare_peers.py)

def agreement(reference, candidate):
    """How well `candidate`'s detections agree with `reference`'s (dicts of numpy arrays with
    boxes, labels, scores and optionally masks). Returns a dict: counts, matched, fraction,
    min_iou, max_score_diff, max_mask_diff (over matched detections; None where nothing matched or
    there are no masks)."""
    ref_boxes, cand_boxes = reference["boxes"].reshape(-1, 4), candidate["boxes"].reshape(-1, 4)
    ref_labels = reference["labels"].reshape(-1).astype(np.int64)
    cand_labels = candidate["labels"].reshape(-1).astype(np.int64)
    iou = box_iou(ref_boxes, cand_boxes)
    taken = np.zeros(len(cand_boxes), bool)
    pairs = []
    for i in np.argsort(-reference["scores"].reshape(-1), kind="stable"):
        ok = (~taken) & (cand_labels == ref_labels[i]) & (iou[i] > IOU_MATCH)
        if ok.any():
            j = int(np.argmax(np.where(ok, iou[i], -1.0)))
            taken[j] = True
            pairs.append((int(i), j))
    count = max(len(ref_boxes), len(cand_boxes))
    result = {"reference": len(ref_boxes), "candidate": len(cand_boxes), "matched": len(pairs),
              "fraction": len(pairs) / count if count else 1.0,
              "min_iou": None, "max_score_diff": None, "max_mask_diff": None}
    if pairs:
        ri, ci = np.array(pairs).T
        result["min_iou"] = float(iou[ri, ci].min())
        result["max_score_diff"] = float(np.abs(reference["scores"].reshape(-1)[ri].astype(np.float64)
                                                - candidate["scores"].reshape(-1)[ci]).max())
        if "masks" in reference and "masks" in candidate:
            rm = reference["masks"].reshape(len(ref_boxes), -1)[ri].astype(np.float64)
            cm = candidate["masks"].reshape(len(cand_boxes), -1)[ci]
            result["max_mask_diff"] = float(np.abs(rm - cm).max())
    return result


def describe(result):
    """One line: '100/100 matched (IoU>0.9, same label) of 100 vs 100 detections, ...'."""
    text = (f"{result['matched']}/{max(result['reference'], result['candidate'])} matched "
            f"(IoU>{IOU_MATCH}, same label), detections {result['candidate']} vs "
            f"{result['reference']}")
    if result["min_iou"] is not None:
        text += (f", min IoU {result['min_iou']:.4f}, max |score diff| "
                 f"{result['max_score_diff']:.2g}")
    if result["max_mask_diff"] is not None:
        text += f", max |28x28 mask prob diff| {result['max_mask_diff']:.2g}"
    return text


def load_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# ----------------------------------------------------------------------------------------------
# Export and references (torch: run in a child python)

def _graph_module(model):
    """The exported graph: torchvision's inference path for one image, ending at 28x28 masks."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, image):
            m = self.detector
            size = image.shape[-2:]
            original_sizes = [(size[0], size[1])]
            images, _ = m.transform([image])
            features = m.backbone(images.tensors)
            proposals, _ = m.rpn(images, features)
            detections, _ = m.roi_heads(features, proposals, images.image_sizes)
            detection = detections[0]
            masks = detection.pop("masks", None)  # [N, 1, 28, 28] probabilities: never pasted
            detection = m.transform.postprocess([detection], images.image_sizes, original_sizes)[0]
            outputs = (detection["boxes"], detection["labels"], detection["scores"])
            return outputs + ((masks,) if masks is not None else ())

    return Graph(model)


def _load(arch, weights, image_npy):
    """(model with fixed_size set to the eager resize of this image, image tensor, eager size)."""
    import torch
    from fpn_tools import models
    torch.manual_seed(0)
    model = models.load_detector(arch, weights)
    image = models.image_tensor(np.load(image_npy))
    with torch.no_grad():
        images, _ = model.transform([image])
    height, width = images.image_sizes[0]  # eager: float64 arithmetic on the real image
    return model, image, (int(height), int(width))


def _as_numpy(outputs):
    return {name: t.detach().numpy() for name, t in zip(OUTPUTS, outputs)}


def export(arch, weights, image_npy, onnx_path):
    import torch
    model, image, (height, width) = _load(arch, weights, image_npy)
    with torch.no_grad():
        plain = model([image])[0]  # torchvision as users run it (computes the size itself)
        model.transform.fixed_size = (width, height)  # trap 2: (w, h), as torchvision reads it
        graph = _graph_module(model).eval()
        reference = _as_numpy(graph(image))
    for name in ("boxes", "labels", "scores"):
        if not np.array_equal(reference[name], plain[name].numpy()):
            sys.exit(f"{arch}: the export wrapper's eager {name} differ from model([image])'s")
    output_names = list(OUTPUTS[:len(reference)])
    errors = []
    for opset in OPSETS:
        try:
            with torch.no_grad():
                torch.onnx.export(graph, (image,), onnx_path, opset_version=opset,
                                  input_names=["image"], output_names=output_names,
                                  do_constant_folding=True)
            break
        except Exception as error:  # noqa: BLE001 - reported below; the next opset is tried
            errors.append(f"opset {opset}: {type(error).__name__}: {error}")
            print(f"export of {arch} at opset {opset} failed: {error}", file=sys.stderr)
    else:
        sys.exit(f"{arch}: ONNX export failed at every opset in {OPSETS}:\n" + "\n".join(errors))
    base = os.path.splitext(onnx_path)[0]
    np.savez(base + ".ref.npz", **reference)
    meta = {"arch": arch, "opset": opset, "recipe": RECIPE, "resized": [height, width],
            "input_shape": list(image.shape), "outputs": output_names,
            "detections": int(len(reference["scores"])), "export_errors": errors,
            "torch": torch.__version__}
    with open(base + ".meta.json", "w") as f:
        json.dump(meta, f)
    print(json.dumps(meta))


def reference64(arch, weights, image_npy, out_npz):
    """The export wrapper's outputs in float64 (same fixed size), and float32's agreement."""
    import torch
    model, image, (height, width) = _load(arch, weights, image_npy)
    model.transform.fixed_size = (width, height)
    graph = _graph_module(model).eval()
    with torch.no_grad():
        outputs = _as_numpy(graph.double()(image.double()))
    np.savez(out_npz, **outputs)
    print(json.dumps({"detections": int(len(outputs["scores"]))}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["export", "reference64"])
    parser.add_argument("--arch", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image-npy", required=True)
    parser.add_argument("--onnx", help="export: the .onnx to write (with .ref.npz, .meta.json)")
    parser.add_argument("--out", help="reference64: the .npz to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    if args.command == "export":
        export(args.arch, args.weights, args.image_npy, args.onnx)
    else:
        reference64(args.arch, args.weights, args.image_npy, args.out)


if __name__ == "__main__":
    main()
