#!/usr/bin/python3
"""Convert a torchvision Faster/Mask R-CNN checkpoint (ResNet-FPN or MobileNetV3-Large-FPN) into fpn
safetensors weights.

The output keeps torchvision's parameter names and stores every tensor as F32 (or F16 with
--fp16). Before writing, the checkpoint is checked against the architecture torchvision itself
builds for --arch: every missing key, unexpected key, wrong shape and non-finite or non-float
value is reported, and nothing is written unless all of them match. Checkpoints saved before
torchvision 0.13 (among them its original R50 COCO checkpoints) name the convolutions of the RPN
head, the mask head and the FPN differently; both layouts are accepted, and the output always
has the current names.

Run with Debian's interpreter, which has torch and torchvision:
    /usr/bin/python3 tools/convert_torchvision.py --arch maskrcnn_resnet50_fpn in.pth out.safetensors
"""
import argparse
import math
import os
import pickle
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fpn_tools import safetensors_io  # noqa: E402

ARCHS = [f"{head}_resnet{depth}_fpn" for head in ("fasterrcnn", "maskrcnn")
         for depth in (18, 34, 50, 101)]
# torchvision's v2 builders: BatchNorm2d in the backbone, the FPN and the heads (folded by fpn at
# load, eps 1e-5), a two-conv RPN head and FastRCNNConvFCHead. Introduced in torchvision 0.13, so
# they have no legacy names.
V2_ARCHS = ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2"]
# torchvision's MobileNetV3-Large FPN builders: one layout of weights (the 320 variant differs only
# in its run-time defaults, which fpn takes from the arch), BatchNorm2d or FrozenBatchNorm2d in the
# body with eps 1e-5, which torchvision never overwrites for them.
MOBILENET_ARCHS = ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"]

# Blocks per ResNet stage (He et al. 2016, table 1); R18/R34 use BasicBlock, R50/R101 Bottleneck.
_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

_CLASS_LOGITS = "roi_heads.box_predictor.cls_score.weight"
_BOX_DELTAS = "roi_heads.box_predictor.bbox_pred.weight"

# torchvision 0.13 wrapped these convolutions in Conv2dNormActivation (a Sequential), which moved
# their parameters down a level or two. Checkpoints saved before then still use the old names,
# which torchvision renames at load time in the _load_from_state_dict of the modules whose
# _version is 2; these are all of them within the detectors we convert (torchvision 0.14):
#   RPNHead (models/detection/rpn.py): rpn.head.conv.{p} -> rpn.head.conv.0.0.{p}
#   MaskRCNNHeads (models/detection/mask_rcnn.py): mask_fcn{i}.{p} -> {i-1}.0.{p}
#   FeaturePyramidNetwork (ops/feature_pyramid_network.py): {inner,layer}_blocks.{i}.{p} ->
#   {inner,layer}_blocks.{i}.0.{p}
# FrozenBatchNorm2d (ops/misc.py) only drops num_batches_tracked, as we do; the other _version 2
# modules under models/ and ops/ (RetinaNet's heads, ViT, MNASNet, ...) are not part of these
# detectors, and IntermediateLayerGetter's _version 2 renames nothing.
# Each entry: a current name, and the legacy name of the same tensor built from its groups.
_LEGACY_NAMES = [
    (re.compile(r"rpn\.head\.conv\.0\.0\.(weight|bias)"),
     lambda match: f"rpn.head.conv.{match[1]}"),
    (re.compile(r"roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)"),
     lambda match: f"roi_heads.mask_head.mask_fcn{int(match[1]) + 1}.{match[2]}"),
    (re.compile(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.0\.(weight|bias)"),
     lambda match: f"backbone.fpn.{match[1]}.{match[2]}.{match[3]}"),
]

EPILOG = """\
legacy names:
  Checkpoints saved before torchvision 0.13, such as its original COCO checkpoints
  fasterrcnn_resnet50_fpn_coco-258fb6c6.pth and maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth, use
  older names for some convolutions. They are accepted and written under the current names, as
  torchvision's own loading renames them:
    rpn.head.conv.P                  -> rpn.head.conv.0.0.P
    roi_heads.mask_head.mask_fcnI.P  -> roi_heads.mask_head.(I-1).0.P    (I = 1..4)
    backbone.fpn.inner_blocks.I.P    -> backbone.fpn.inner_blocks.I.0.P  (I = 0..3)
    backbone.fpn.layer_blocks.I.P    -> backbone.fpn.layer_blocks.I.0.P  (I = 0..3)
  where P is weight or bias. Both layouts, or a mix, are accepted, but a checkpoint that holds
  the same tensor under both names is refused.

frozen BatchNorm eps:
  torchvision's detectors use FrozenBatchNorm2d with eps=1e-5, except its original COCO
  checkpoints fasterrcnn_resnet50_fpn_coco and maskrcnn_resnet50_fpn_coco (the *_COCO_V1
  weights), which were trained with eps=0.0: torchvision calls overwrite_eps(model, 0.0) after
  loading them (torchvision/models/detection/faster_rcnn.py and mask_rcnn.py). Convert those
  with --frozen-bn-eps 0.0; the value is stored in the output's metadata as "frozen_bn_eps".
  0.0 is for those ResNet-50 v1 COCO checkpoints only. The MobileNetV3-Large FPN checkpoints
  (fasterrcnn_mobilenet_v3_large_fpn and _320_fpn, COCO ones included) use eps 1e-5, which
  torchvision never overwrites for them, so --frozen-bn-eps 0.0 with those archs is refused.

exit status: 0 on success, 1 if the checkpoint cannot be read or does not fit --arch,
2 on a usage error.
"""


class ConversionError(Exception):
    """A fault in the user's input, reported as a message without a traceback."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Convert a torchvision Faster/Mask R-CNN checkpoint (ResNet-FPN or "
                    "MobileNetV3-Large-FPN; a state_dict saved with "
                    "torch.save, or a dict holding it under \"model\" or \"state_dict\") into "
                    "safetensors weights for fpn, keeping torchvision's parameter names.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=ARCHS + V2_ARCHS + MOBILENET_ARCHS,
                        help="detector architecture (torchvision's builder name)")
    parser.add_argument("input", help="torchvision checkpoint (.pth)")
    parser.add_argument("output", help="safetensors file to write (replaced atomically)")
    parser.add_argument("--frozen-bn-eps", type=_non_negative_float, default=1e-5, metavar="EPS",
                        help="eps of the backbone's FrozenBatchNorm2d layers (default 1e-5; "
                             "0.0 for torchvision's original ResNet-50 v1 COCO checkpoints only, "
                             "never for MobileNetV3; see below)")
    parser.add_argument("--fp16", action="store_true",
                        help="store tensors as F16 instead of F32 (half the size, less precise)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow checkpoints that hold arbitrary Python objects (e.g. the "
                             "training args saved by torchvision's reference scripts); unpickling "
                             "them can run code, so use this only for files you trust")
    args = parser.parse_args(argv)
    if args.arch in MOBILENET_ARCHS and args.frozen_bn_eps == 0.0:
        parser.error(f"--frozen-bn-eps 0.0 is for torchvision's ResNet-50 v1 COCO checkpoints only: "
                     f"{args.arch} checkpoints, COCO ones included, use eps 1e-5 (torchvision never "
                     "overwrites it for MobileNetV3); omit --frozen-bn-eps")
    return args


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def load_state_dict(path, trust_pickle):
    """Returns the checkpoint's {name: tensor}, unwrapping {"model": ...} / {"state_dict": ...}."""
    import torch

    if not os.path.exists(path):
        raise ConversionError(f"cannot read '{path}': no such file")
    if not os.path.isfile(path):
        raise ConversionError(f"cannot read '{path}': not a regular file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except OSError as error:
        raise ConversionError(f"cannot read '{path}': {error.strerror or error}") from None
    except pickle.UnpicklingError as error:
        if not trust_pickle and "Weights only load failed" in str(error):
            detail = str(error).rpartition("WeightsUnpickler error: ")[2]
            raise ConversionError(
                f"'{path}' holds Python objects besides tensors ({detail}); unpickling them can "
                "run code, so rerun with --trust-pickle only if you trust the file") from None
        raise ConversionError(f"cannot read '{path}': not a PyTorch checkpoint ({error})") from None
    except EOFError:
        raise ConversionError(f"cannot read '{path}': the file is empty or truncated") from None
    except Exception as error:  # torch raises many types for corrupt files; all mean the same
        raise ConversionError(
            f"cannot read '{path}': not a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from None

    if isinstance(checkpoint, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(checkpoint.get(wrapper), (dict, torch.nn.Module)):
                checkpoint = checkpoint[wrapper]
                break
    if isinstance(checkpoint, torch.nn.Module):  # torch.save(model), loadable only when trusted
        checkpoint = checkpoint.state_dict()
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ConversionError(
            f"'{path}' is not a state_dict: expected a non-empty dict of tensors (or a dict with "
            f"one under \"model\" or \"state_dict\"), got {_describe(checkpoint)}")
    not_tensors = [f"  \"{name}\" is {_describe(value)}" for name, value in checkpoint.items()
                   if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"'{path}' is not a state_dict: these entries are not tensors:\n" +
                              "\n".join(not_tensors))
    # nn.DataParallel / DistributedDataParallel checkpoints prefix every name with "module.".
    if all(name.startswith("module.") for name in checkpoint):
        checkpoint = {name[len("module."):]: value for name, value in checkpoint.items()}
    return dict(checkpoint)


def _describe(value):
    if isinstance(value, dict):
        return "an empty dict" if not value else f"a dict with keys {sorted(map(str, value))[:5]}"
    return f"a value of type {type(value).__name__}"


def infer_num_classes(state):
    """(classes including background, where that number came from)."""
    if _CLASS_LOGITS in state and state[_CLASS_LOGITS].dim() == 2:
        return state[_CLASS_LOGITS].shape[0], f"rows of \"{_CLASS_LOGITS}\""
    deltas = state.get(_BOX_DELTAS)
    if deltas is not None and deltas.dim() == 2 and deltas.shape[0] % 4 == 0:
        return deltas.shape[0] // 4, f"rows of \"{_BOX_DELTAS}\" / 4"
    return 91, "torchvision's COCO default"  # the missing class logits are reported anyway


def expected_shapes(arch, num_classes):
    """{name: shape} of torchvision's own model for arch, built offline with random weights."""
    from torchvision.models import detection
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    if arch in V2_ARCHS + MOBILENET_ARCHS:
        # torchvision's own builder; its BatchNorm2d layers carry num_batches_tracked, training
        # state that fpn does not read (dropped like a FrozenBatchNorm2d checkpoint's).
        model = getattr(detection, arch)(weights=None, weights_backbone=None,
                                         num_classes=num_classes)
        return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()
                if not _is_batch_counter(name)}
    head, depth, _ = arch.split("_")
    # FrozenBatchNorm2d (resnet_fpn_backbone's default) is what torchvision's detectors use; it
    # has no num_batches_tracked buffer, which a BatchNorm2d checkpoint may add and we drop.
    backbone = resnet_fpn_backbone(backbone_name=depth, weights=None)
    detector = MaskRCNN if head == "maskrcnn" else FasterRCNN
    model = detector(backbone, num_classes=num_classes)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def guess_arch(names):
    """The arch whose backbone and heads the key names suggest, or None."""
    # MobileNetV3-Large's body is torchvision's `features` Sequential: "backbone.body.<index>.",
    # 0..16. Both MobileNet builders have the same names and shapes.
    if any(name.startswith("backbone.body.16.") for name in names):
        return " or ".join(MOBILENET_ARCHS)
    blocks = []
    for stage in range(1, 5):
        prefix = f"backbone.body.layer{stage}."
        indices = {name[len(prefix):].split(".")[0] for name in names if name.startswith(prefix)}
        blocks.append(len(indices))
    bottleneck = any(".conv3." in name for name in names if name.startswith("backbone.body."))
    for depth, counts in _STAGE_BLOCKS.items():
        if tuple(blocks) == counts and bottleneck == (depth >= 50):
            masks = any(name.startswith("roi_heads.mask_") for name in names)
            # v2: FastRCNNConvFCHead's Sequential layers instead of TwoMLPHead's fc6/fc7.
            v2 = any(name.startswith("roi_heads.box_head.0.") for name in names)
            return (f"{'maskrcnn' if masks else 'fasterrcnn'}_resnet{depth}_fpn"
                    + ("_v2" if v2 else ""))
    return None


def legacy_name(name):
    """The name torchvision before 0.13 gave the tensor now called name, or None."""
    for current, legacy in _LEGACY_NAMES:
        match = current.fullmatch(name)
        if match:
            return legacy(match)
    return None


def rename_legacy(state, expected):
    """(state with the legacy names of expected tensors replaced by the current ones, keeping the
    order; {current: legacy name} of each renamed tensor; a problem line for each tensor held
    under both names, whose legacy entry is dropped so that it is not reported twice)."""
    renames, duplicates, problems = {}, set(), []
    for name in expected:
        legacy = legacy_name(name)
        if legacy is None or legacy not in state:
            continue
        if name in state:
            duplicates.add(legacy)
            problems.append(f"  duplicate: \"{legacy}\" is the legacy name of \"{name}\", and "
                            "the checkpoint holds both")
        else:
            renames[legacy] = name
    renamed = {renames.get(name, name): tensor for name, tensor in state.items()
               if name not in duplicates}
    return renamed, {current: legacy for legacy, current in renames.items()}, problems


def find_problems(state, expected, origins=None):
    """Every missing key, unexpected key and wrong shape, one line each. origins maps a renamed
    tensor's name to the legacy name it had in the checkpoint."""
    problems = []
    for name, shape in expected.items():
        if name not in state:
            problems.append(f"  missing: \"{name}\" expected {_shape(shape)}")
            continue
        label = f"\"{name}\""
        if origins and name in origins:
            label += f" (stored as \"{origins[name]}\")"
        if tuple(state[name].shape) != shape:
            problems.append(f"  wrong shape: {label} expected {_shape(shape)}, "
                            f"got {_shape(state[name].shape)}")
        elif not state[name].is_floating_point():
            problems.append(f"  wrong dtype: {label} expected a floating-point tensor, "
                            f"got {state[name].dtype}")
        elif not bool(state[name].isfinite().all()):
            problems.append(f"  not finite: {label} holds NaN or infinite values")
    for name, tensor in state.items():
        if name not in expected:
            problems.append(f"  unexpected: \"{name}\" {_shape(tensor.shape)}")
    return problems


def arch_hint(state, expected, arch):
    """A line suggesting what the checkpoint is instead, or ''."""
    if not any(name in state for name in expected):
        return "none of the expected names are present: is this a torchvision detection checkpoint?"
    guess = guess_arch(state)
    if guess is None or arch in guess.split(" or "):
        return ""
    return f"the checkpoint looks like --arch {guess}"


def _shape(shape):
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _is_batch_counter(name):
    """BatchNorm2d's num_batches_tracked: training state that FrozenBatchNorm2d does not have."""
    return name.rpartition(".")[2] == "num_batches_tracked"


def convert(args):
    import torch

    output_directory = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(output_directory):
        raise ConversionError(f"cannot write '{args.output}': directory '{output_directory}' "
                              "does not exist")
    state = load_state_dict(args.input, args.trust_pickle)
    num_classes, classes_origin = infer_num_classes(state)
    expected = expected_shapes(args.arch, num_classes)
    state = {name: tensor for name, tensor in state.items() if not _is_batch_counter(name)}
    state, origins, duplicates = rename_legacy(state, expected)

    problems = duplicates + find_problems(state, expected, origins)
    if problems:
        hint = arch_hint(state, expected, args.arch)
        raise ConversionError(
            f"'{args.input}' does not fit --arch {args.arch} (num_classes {num_classes}, from "
            f"{classes_origin}); {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n" +
            "\n".join(problems) + (f"\n{hint}" if hint else ""))

    dtype = torch.float16 if args.fp16 else torch.float32
    tensors = {name: tensor.to(dtype) for name, tensor in state.items()}
    if args.fp16:
        overflows = [f"  \"{name}\" has values beyond the F16 range (65504)"
                     for name, tensor in tensors.items() if not bool(tensor.isfinite().all())]
        if overflows:
            raise ConversionError("cannot store as --fp16:\n" + "\n".join(overflows))
    metadata = {
        "format": "fpn",
        "arch": args.arch,
        "frozen_bn_eps": repr(args.frozen_bn_eps),
        "num_classes": str(num_classes),
        "source": os.path.basename(args.input),
    }
    try:
        safetensors_io.save_file(tensors, args.output, metadata)
    except OSError as error:
        raise ConversionError(f"cannot write '{args.output}': {error.strerror or error}") from None
    return len(tensors), len(origins)


def main(argv=None):
    args = parse_args(argv)
    try:
        count, renamed = convert(args)
    except ConversionError as error:
        print(f"convert_torchvision: {error}", file=sys.stderr)
        return 1
    print(f"wrote {count} tensors to '{args.output}'")
    if renamed:
        print(f"renamed {renamed} tensors from torchvision's pre-0.13 names (see --help)")
        if args.frozen_bn_eps != 0.0 and args.arch not in MOBILENET_ARCHS:
            print(f"note: frozen_bn_eps is {args.frozen_bn_eps!r}; torchvision's original COCO "
                  "checkpoints need --frozen-bn-eps 0.0 (see --help)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
