"""Seeded torchvision detectors with realistic activations, for fixtures and benchmarks.

Random-init FrozenBatchNorm2d statistics (mean 0, var 1) let activations grow without bound
through a deep ResNet, which would make relative-error comparisons meaningless. `calibrate`
runs one image through the model and sets every FrozenBatchNorm2d's running statistics to the
per-channel mean and variance of its input there, with a random affine (gamma, beta), so each
normalised activation is of order one, as in a trained network.
"""
import numpy as np
import torch
import torchvision
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

ARCHES = [f"{kind}_resnet{depth}_fpn" for kind in ("fasterrcnn", "maskrcnn")
          for depth in (18, 34, 50, 101)]
# torchvision's v2 builders (Li et al. 2021, "Benchmarking detection transfer learning with ViTs"):
# BatchNorm2d in the backbone, the FPN, the box head (FastRCNNConvFCHead) and the mask head, and
# a two-conv RPN head. Built by torchvision's own builder functions.
V2_ARCHES = ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2"]
# torchvision's MobileNetV3-Large FPN builders: the same weights, different run-time defaults (the
# 320 variant: min_size 320, max_size 640, 150 RPN proposals before and after NMS; both: RPN
# score_thresh 0.05). With weights=None, weights_backbone=None the body's norm is nn.BatchNorm2d
# with eps 1e-5 (the builder passes its own norm_layer, so never MobileNetV3's eps 0.001).
MOBILENET_ARCHES = ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"]
ALL_ARCHES = ARCHES + V2_ARCHES + MOBILENET_ARCHES


def parse_arch(arch):
    """'maskrcnn_resnet50_fpn' -> ('maskrcnn', 50); 'maskrcnn_resnet50_fpn_v2' likewise;
    'fasterrcnn_mobilenet_v3_large_fpn' (and its 320 variant) -> ('fasterrcnn', None)."""
    if arch not in ALL_ARCHES:
        raise ValueError(f"unknown arch {arch!r}, expected one of {', '.join(ALL_ARCHES)}")
    if is_mobilenet(arch):
        return "fasterrcnn", None
    kind, resnet = arch.split("_")[:2]
    return kind, int(resnet[len("resnet"):])


def is_v2(arch):
    return arch in V2_ARCHES


def is_mobilenet(arch):
    return arch in MOBILENET_ARCHES


def uses_batch_norm(arch):
    """Whether torchvision's weights=None builder puts nn.BatchNorm2d in the model (calibrated by
    calibrate_all) rather than FrozenBatchNorm2d in the backbone only (calibrate)."""
    return is_v2(arch) or is_mobilenet(arch)


def build_detector(arch, num_classes=91, eps=1e-5, **kwargs):
    """An untrained torchvision detector exactly as the arch's published checkpoints lay out."""
    kind, depth = parse_arch(arch)
    if uses_batch_norm(arch):
        # weights=None builders use nn.BatchNorm2d (eps 1e-5) everywhere; eval mode folds it.
        # The MobileNet builders' own defaults (rpn_score_thresh, the 320 variant's sizes) apply
        # unless kwargs override them.
        builder = getattr(torchvision.models.detection, arch)
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = eps
        return model
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=5)
    for module in backbone.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps
    cls = MaskRCNN if kind == "maskrcnn" else FasterRCNN
    return cls(backbone, num_classes=num_classes, **kwargs)


def synthetic_image(height, width, seed):
    """A uint8 RGB [H, W, 3] scene: smooth gradient background, filled shapes, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        image[..., c] = 128 + 60 * np.sin(a * x / 37.0 + b * y / 29.0 + phase * 3)
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.05, 0.3) * min(height, width) + 1
        color = rng.uniform(0, 255, 3)
        if rng.uniform() < 0.5:
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
        else:
            mask = (abs(y - cy) < r) & (abs(x - cx) < r * rng.uniform(0.5, 1.5))
        image[mask] = color
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_tensor(rgb):
    """uint8 [H, W, 3] -> float [3, H, W] in [0, 1], as fpn's preprocessing reads it."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255


def _statistics_hook(generator):
    """A forward pre-hook that gives a BatchNorm layer the statistics of its input (so its output
    is of order one) and a random affine transform drawn from `generator`."""
    def set_statistics(module, inputs):
        x = inputs[0]
        channels = x.shape[1]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False) + 1e-3)
        module.weight.copy_(torch.rand(channels, generator=generator) * 0.5 + 0.5)
        module.bias.copy_(torch.randn(channels, generator=generator) * 0.2)
    return set_statistics


@torch.no_grad()
def calibrate(model, seed, calibration_image=None):
    """Seeds every weight and sets FrozenBatchNorm2d statistics from one forward pass."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    hooks = []
    set_statistics = _statistics_hook(generator)

    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            hooks.append(module.register_forward_pre_hook(set_statistics))
    if calibration_image is None:
        calibration_image = synthetic_image(256, 320, seed + 1)
    model.eval()
    model.backbone(model.transform([image_tensor(calibration_image)])[0].tensors)
    for hook in hooks:
        hook.remove()
    return model


@torch.no_grad()
def calibrate_all(model, seed, calibration_image=None):
    """calibrate for models built with nn.BatchNorm2d (the v2 and MobileNetV3 builders): every
    BatchNorm2d (backbone, FPN, box head, mask head) gets the statistics of its input on one
    image, the heads' on the RPN's proposals for it, so each stage's activations are of order
    one however deep the heads are."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    # torchvision initialises the RPN head's convs with std 0.01, under which two stacked 3x3
    # convs shrink the features ~20x before the 1x1 predictors: objectness logits crowd the bias
    # (near-ties). Kaiming scales keep the 3x3 convs' maps of order one; the 1x1 predictors keep
    # std 0.01, so deltas stay small and boxes anchor-sized (large deltas make sub-pixel boxes).
    for name, parameter in model.rpn.head.conv.named_parameters():
        if name.endswith("weight"):
            fan_in = parameter[0].numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    hooks = []
    set_statistics = _statistics_hook(generator)

    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            hooks.append(module.register_forward_pre_hook(set_statistics))
    if calibration_image is None:
        calibration_image = synthetic_image(256, 320, seed + 1)
    model.eval()
    images, _ = model.transform([image_tensor(calibration_image)])
    features = model.backbone(images.tensors)
    proposals, _ = model.rpn(images, features)
    heads = model.roi_heads
    heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes))
    if heads.has_mask():
        heads.mask_head(heads.mask_roi_pool(features, [p[:200] for p in proposals],
                                            images.image_sizes))
    for hook in hooks:
        hook.remove()
    return model


def state_dict_for_export(model):
    """torchvision's names and tensors, without BatchNorm's num_batches_tracked counters."""
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def export_metadata(arch, eps, num_classes, source="seeded"):
    return {"format": "fpn", "arch": arch, "frozen_bn_eps": repr(float(eps)),
            "num_classes": str(num_classes), "source": source,
            "torchvision": torchvision.__version__}


def load_detector(arch, path):
    """The arch's torchvision detector (build_detector) with the weights of a safetensors file
    written by save_seeded_detector (or the converter's layout), in eval mode."""
    from .safetensors_io import load_file
    model = build_detector(arch)
    tensors, _ = load_file(path)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    return model.eval()


def save_seeded_detector(arch, path, seed, eps=1e-5, classifier_scale=1.0):
    """Builds, calibrates and writes a seeded detector; returns the model.

    classifier_scale > 1 sharpens the random classifier: its near-uniform softmax over 91 classes
    gives scores mostly under 0.05; scaled logits give ~100 detections, the hard case for tests.
    """
    with torch.no_grad():
        # torchvision draws the conv weights from torch's global generator, which Debian's torch
        # seeds differently in every process: without this, every run made other weights.
        torch.manual_seed(seed)
        model = build_detector(arch, eps=eps)
        model = calibrate_all(model, seed) if uses_batch_norm(arch) else calibrate(model, seed)
        model.roi_heads.box_predictor.cls_score.weight.mul_(classifier_scale)
    from .safetensors_io import save_file
    save_file(state_dict_for_export(model), path, metadata=export_metadata(arch, eps, 91))
    return model
