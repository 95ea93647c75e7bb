"""The seed's two claims on the demo's scenes: RPN variants for the recall experiment, and the
segment-proposal network (FPN paper, Lin et al. 2017, sections 5.1 and 6.1).

Every model is the demo's body (demo_model.NarrowResNet: BasicBlock stages of widths 16/32/64/128,
BatchNorm2d exported as running statistics, eps 1e-5) under a 64-channel neck built from
torchvision's FPN parts, behind torchvision's GeneralizedRCNNTransform (ImageNet mean and std,
short side 320, long side at most 512, padded to a multiple of 32). Parameter names are
torchvision's: "backbone.body.*" (the ResNet), "backbone.fpn.inner_blocks.<i>.0.*" (the 1x1
lateral from C<i+2>), "backbone.fpn.layer_blocks.<i>.0.*" (the 3x3 output conv of level i),
"rpn.head.*" (RPNHead). A neck that does not use a lateral or an output conv has nn.Identity in
that slot, so it has no tensor of that name and the indices keep their meaning.

Necks (C2..C5 are layer1..layer4 at strides 4..32; L_k = inner_blocks[k-2](C_k), the 1x1 lateral;
up(x, C) = nearest-neighbour interpolation of x to C's height and width, torchvision's
F.interpolate(mode="nearest", size=...), which is 2x except on odd sizes; conv_k =
layer_blocks[k-2], the 3x3 conv, padding 1; pool(x) = max_pool2d(x, 1, stride 2), torchvision's
LastLevelMaxPool):

  fpn                 torchvision's FeaturePyramidNetwork([16, 32, 64, 128], 64, LastLevelMaxPool):
                      T5 = L5, T_k = L_k + up(T_{k+1}, C_k) for k = 4, 3, 2; P_k = conv_k(T_k);
                      P6 = pool(P5). Levels P2..P6, strides 4..64.
  c4                  the paper's single-scale baseline on C4, given the same 1x1 + 3x3 as a
                      pyramid level so that it differs from fpn only in having one level:
                      torchvision's FeaturePyramidNetwork([64], 64) on C4 alone, P = conv(L4)
                      (the body stops after layer3; no layer4 tensors). One level, stride 16.
  p2                  fpn's top-down pathway, but only P2 = conv_2(T2) is output (layer_blocks
                      1..3 are Identity). One level, stride 4.
  topdown_no_lateral  T5 = L5 (the one lateral kept: C5 must reach 64 channels),
                      T_k = up(T_{k+1}, C_k) for k = 4, 3, 2, so no L2..L4; P_k = conv_k(T_k);
                      P6 = pool(P5). Levels P2..P6.
  lateral_no_topdown  T_k = L_k for every k, no up-and-add; P_k = conv_k(T_k); P6 = pool(P5).
                      Levels P2..P6.

RPN (torchvision's RegionProposalNetwork with RPNHead(64, A), one head shared by all levels,
aspect ratios 0.5, 1, 2): on five levels one anchor size per level, 16, 32, 64, 128, 256 on
P2..P6 (A = 3; half of torchvision's 32..512, as the images are 320 instead of 800 on the
short side); on one level all five sizes (A = 15). Matching and sampling are torchvision's
defaults (IoU 0.7 / 0.3, 256 anchors per image, half positive). At test time each level keeps
its top PRE_NMS_PER_LEVEL * 5 / levels by objectness (1000 per level on five levels, 5000 on
one, so every variant sees the same number of candidates), then NMS 0.7 per level, top 1000.

Segment-proposal network (paper section 6.1, after DeepMask): on the fpn pyramid P2..P6, two
small MLPs shared by all levels and run fully convolutionally, "segment_head.window5" over 5x5
windows and "segment_head.window7" over 7x7 windows (the half-octave scales, 7/5 ~ sqrt 2):
hidden = ReLU(Conv2d(64, 128, k, padding k // 2)); mask_logits = Conv2d(128, 196, 1)(hidden),
channel r * 14 + c the logit of cell (row r, column c) of a 14x14 mask; objectness =
Conv2d(128, 1, 1)(hidden).
  Window: the output at (y, x) of level stride s (nominal: 4, 8, 16, 32, 64 on P2..P6, not
  torchvision's image // grid) is the square box of side k * s centred at ((x + 0.5) s,
  (y + 0.5) s) in the resized image: the k feature cells the window covers.
  Decoding (select_segments): per level and window size the top PRE_NMS_PER_GROUP locations by
  objectness logit (torch.topk). The proposal's box is the box of its mask: the 14x14 cells with
  logit > 0 (probability > 0.5), mapped linearly into the window (cell c spans [x1 + c side / 14,
  x1 + (c + 1) side / 14)), clipped to the image; locations with an empty mask, or a box thinner
  than 1e-3 after clipping, are dropped. Score = sigmoid(objectness). The paper merges masks
  across scales; we merge proposals of all levels and both window sizes with one box NMS
  (IoU 0.7) on those mask boxes, and keep the top POST_NMS_TOP_N.
  Masks to image coordinates (paste_segment_masks): the window box scaled to the original image
  (torchvision's resize_boxes), and sigmoid(mask logits) pasted into it with torchvision's
  paste_masks_in_image (padding 1: the 16x16 padded mask into the window grown by 16/14, box
  corners truncated toward zero by .to(int64), then bilinear), thresholded at > 0.5, exactly as
  Mask R-CNN's masks are.
  Training targets (segment_targets), DeepMask's rule at our scales: the canonical object size of
  a window of side k s is c = 4/7 k s (DeepMask: a 128-pixel object in a 224-pixel window). An
  object (box w x h in the resized image, size L = max(w, h)) belongs to the one window size
  (level and k) whose c is nearest to L in log scale. A location of that window size is positive
  for the object when the object's box centre lies within s of the window centre in x and in y
  (so every object has positives, 2 to 3 per axis); of several such objects it takes the one with
  the nearest centre (the first on a tie). A location that is not positive but has an object
  within 2 s and within a factor 2 of c is ignored; every other location is negative. Per image
  256 locations are sampled, at most half positive (torchvision's BalancedPositiveNegativeSampler)
  for the objectness loss (binary cross-entropy); the mask loss is binary cross-entropy on every
  positive location's 196 logits against the object's mask projected into the window
  (torchvision's project_masks_on_boxes: roi_align 14x14, aligned=False), as Mask R-CNN does.
"""
import json
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import (expand_boxes, expand_masks,
                                                    paste_masks_in_image, project_masks_on_boxes)
from torchvision.models.detection.rpn import (RegionProposalNetwork, RPNHead,
                                              concat_box_prediction_layers)
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from .demo_model import BN_EPS, FPN_CHANNELS, MAX_SIZE, MIN_SIZE, STAGE_WIDTHS, NarrowResNet
from .safetensors_io import load_file

RPN_VARIANTS = ("fpn", "c4", "p2", "topdown_no_lateral", "lateral_no_topdown")
VARIANTS = RPN_VARIANTS + ("segments",)
ANCHOR_SIZES = (16, 32, 64, 128, 256)
ASPECT_RATIOS = (0.5, 1.0, 2.0)
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]
PRE_NMS_PER_LEVEL = 1000  # on five levels; one level keeps five times as many
POST_NMS_TOP_N = 1000
NMS_THRESH = 0.7
# Training: the RPN loss does not read the proposals, so keep their filtering cheap.
TRAIN_PRE_NMS, TRAIN_POST_NMS = 100, 100

MASK_SIZE = 14
WINDOWS = (5, 7)
SEGMENT_HIDDEN = 128
SEGMENT_STRIDES = (4, 8, 16, 32, 64)
PRE_NMS_PER_GROUP = 1000  # per level and window size
CANONICAL_FRACTION = 4 / 7  # object size / window side, DeepMask's 128 / 224
SEGMENT_SAMPLES = 256
SEGMENT_POSITIVE_FRACTION = 0.5
MIN_BOX_SIZE = 1e-3

LAYERS = ("layer1", "layer2", "layer3", "layer4")


class SeedNeck(FeaturePyramidNetwork):
    """torchvision's FPN with the top-down addition, the laterals below the top, or some output
    convs left out (see the module docstring). With everything on it computes what
    FeaturePyramidNetwork computes; its slots and names are the same."""

    def __init__(self, in_channels_list, out_channels, lateral=True, top_down=True,
                 outputs=None, extra_blocks=None):
        super().__init__(in_channels_list, out_channels, extra_blocks=extra_blocks)
        count = len(in_channels_list)
        self.lateral, self.top_down = lateral, top_down
        self.outputs = tuple(range(count)) if outputs is None else tuple(outputs)
        if not lateral:
            for i in range(count - 1):
                self.inner_blocks[i] = nn.Identity()
        for i in range(count):
            if i not in self.outputs:
                self.layer_blocks[i] = nn.Identity()

    def forward(self, x):
        names = list(x.keys())
        x = list(x.values())
        merged = [None] * len(x)
        merged[-1] = self.inner_blocks[-1](x[-1])
        for idx in range(len(x) - 2, -1, -1):
            if self.top_down:
                top_down = F.interpolate(merged[idx + 1], size=x[idx].shape[-2:], mode="nearest")
                merged[idx] = (self.inner_blocks[idx](x[idx]) + top_down if self.lateral
                               else top_down)
            else:
                merged[idx] = self.inner_blocks[idx](x[idx])
        results = [self.layer_blocks[i](merged[i]) for i in self.outputs]
        names = [names[i] for i in self.outputs]
        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, x, names)
        return OrderedDict(zip(names, results))


class SeedBackbone(nn.Module):
    """body (IntermediateLayerGetter over NarrowResNet) then fpn (the neck), torchvision's
    BackboneWithFPN layout."""

    def __init__(self, body, fpn):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = FPN_CHANNELS

    def forward(self, x):
        return self.fpn(self.body(x))


def build_backbone(variant):
    resnet = NarrowResNet()
    if variant == "c4":
        body = IntermediateLayerGetter(resnet, return_layers={"layer3": "0"})
        return SeedBackbone(body, FeaturePyramidNetwork([STAGE_WIDTHS[2]], FPN_CHANNELS))
    body = IntermediateLayerGetter(resnet, return_layers={name: str(i)
                                                          for i, name in enumerate(LAYERS)})
    widths = list(STAGE_WIDTHS)
    if variant in ("fpn", "segments"):
        neck = FeaturePyramidNetwork(widths, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
    elif variant == "p2":
        neck = SeedNeck(widths, FPN_CHANNELS, outputs=(0,))
    elif variant == "topdown_no_lateral":
        neck = SeedNeck(widths, FPN_CHANNELS, lateral=False, extra_blocks=LastLevelMaxPool())
    elif variant == "lateral_no_topdown":
        neck = SeedNeck(widths, FPN_CHANNELS, top_down=False, extra_blocks=LastLevelMaxPool())
    else:
        raise ValueError(f"unknown variant {variant!r}, expected one of {', '.join(VARIANTS)}")
    return SeedBackbone(body, neck)


def num_levels(variant):
    return 1 if variant in ("c4", "p2") else 5


def anchor_sizes(variant):
    """AnchorGenerator's sizes: one per level, or all five on the one level."""
    if num_levels(variant) == 1:
        return (ANCHOR_SIZES,)
    return tuple((size,) for size in ANCHOR_SIZES)


def make_transform():
    return GeneralizedRCNNTransform(MIN_SIZE, MAX_SIZE, IMAGE_MEAN, IMAGE_STD)


class SeedRPN(nn.Module):
    """transform, backbone, rpn: an RPN-only detector. Training: model(images, targets) returns
    torchvision's RPN losses. Eval: model(images) returns per image {"boxes" (original image
    pixels), "scores" (sigmoid objectness)}, post-NMS, best first."""

    def __init__(self, variant):
        super().__init__()
        if variant not in RPN_VARIANTS:
            raise ValueError(f"unknown RPN variant {variant!r}")
        self.variant = variant
        self.transform = make_transform()
        self.backbone = build_backbone(variant)
        sizes = anchor_sizes(variant)
        generator = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
        head = RPNHead(FPN_CHANNELS, generator.num_anchors_per_location()[0])
        pre_nms = PRE_NMS_PER_LEVEL * 5 // len(sizes)
        self.rpn = RegionProposalNetwork(
            generator, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n={"training": TRAIN_PRE_NMS, "testing": pre_nms},
            post_nms_top_n={"training": TRAIN_POST_NMS, "testing": POST_NMS_TOP_N},
            nms_thresh=NMS_THRESH)

    def forward(self, images, targets=None):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        if self.training:
            _, losses = self.rpn(image_list, features, targets)
            return losses
        boxes, scores = rpn_proposals(self.rpn, image_list, features)
        return [{"boxes": resize_boxes(b, size, original), "scores": s}
                for b, s, size, original in zip(boxes, scores, image_list.image_sizes,
                                                original_sizes)]


def rpn_proposals(rpn, image_list, features):
    """RegionProposalNetwork.forward's eval path, keeping the scores it drops: per image
    (boxes [K, 4] in resized-image pixels, sigmoid scores [K])."""
    feature_list = list(features.values())
    objectness, deltas = rpn.head(feature_list)
    anchors = rpn.anchor_generator(image_list, feature_list)
    per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
    return rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)


class WindowMLP(nn.Module):
    """The MLP over k x k feature windows, fully convolutional: [N, 64, H, W] ->
    (objectness [N, 1, H, W], mask logits [N, 196, H, W])."""

    def __init__(self, in_channels, window, hidden=SEGMENT_HIDDEN, mask_size=MASK_SIZE):
        super().__init__()
        self.window = window
        self.hidden = nn.Conv2d(in_channels, hidden, window, padding=window // 2)
        self.mask_logits = nn.Conv2d(hidden, mask_size * mask_size, 1)
        self.objectness = nn.Conv2d(hidden, 1, 1)

    def forward(self, x):
        hidden = F.relu(self.hidden(x))
        return self.objectness(hidden), self.mask_logits(hidden)

    def forward_at(self, feature, ys, xs):
        """The same MLP at chosen locations only (training samples a few hundred of the
        thousands): feature [C, H, W]; ys, xs [n] -> (objectness [n], mask logits [n, 196])."""
        radius = self.window // 2
        padded = F.pad(feature, (radius,) * 4)
        offsets = torch.arange(self.window)
        rows = (ys[:, None] + offsets[None])[:, :, None]  # [n, k, 1], padded coordinates
        columns = (xs[:, None] + offsets[None])[:, None, :]  # [n, 1, k]
        windows = padded[:, rows, columns].permute(1, 0, 2, 3).reshape(len(ys), -1)
        hidden = F.relu(F.linear(windows, self.hidden.weight.flatten(1), self.hidden.bias))
        objectness = F.linear(hidden, self.objectness.weight.flatten(1), self.objectness.bias)
        masks = F.linear(hidden, self.mask_logits.weight.flatten(1), self.mask_logits.bias)
        return objectness[:, 0], masks


class SegmentHead(nn.Module):
    def __init__(self, in_channels=FPN_CHANNELS):
        super().__init__()
        self.window5 = WindowMLP(in_channels, 5)
        self.window7 = WindowMLP(in_channels, 7)

    def forward(self, features):
        """features: the pyramid (name -> [N, 64, H, W], P2..P6) -> list over levels of
        {window: (objectness [N, 1, H, W], mask logits [N, 196, H, W])}."""
        return [{5: self.window5(f), 7: self.window7(f)} for f in features.values()]


def window_boxes(height, width, stride, window, device=None):
    """[H * W, 4] window boxes of a level, row-major over (y, x), resized-image pixels."""
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    half = window * stride / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4)


def canonical_size(stride, window):
    return CANONICAL_FRACTION * window * stride


def groups():
    """(level index, stride, window) for every window size of every level, in output order."""
    return [(level, stride, window) for level, stride in enumerate(SEGMENT_STRIDES)
            for window in WINDOWS]


def mask_boxes(mask_logits, windows):
    """The box of each 14x14 mask's cells with logit > 0, mapped into its window.
    mask_logits: [K, 14, 14]; windows: [K, 4] -> (boxes [K, 4], nonempty [K] bool)."""
    on = mask_logits > 0
    size = mask_logits.shape[-1]
    columns, rows = on.any(1), on.any(2)  # [K, 14] each
    index = torch.arange(size, device=mask_logits.device)
    big = torch.full_like(index, size)
    c_min = torch.where(columns, index, big).min(1).values
    c_max = torch.where(columns, index, -1).max(1).values
    r_min = torch.where(rows, index, big).min(1).values
    r_max = torch.where(rows, index, -1).max(1).values
    cell_w = (windows[:, 2] - windows[:, 0]) / size
    cell_h = (windows[:, 3] - windows[:, 1]) / size
    boxes = torch.stack([windows[:, 0] + c_min * cell_w, windows[:, 1] + r_min * cell_h,
                         windows[:, 0] + (c_max + 1) * cell_w,
                         windows[:, 1] + (r_max + 1) * cell_h], 1)
    return boxes, columns.any(1)


@torch.no_grad()
def select_segments(outputs, image_size, image_index=0, pre_nms=PRE_NMS_PER_GROUP,
                    post_nms=POST_NMS_TOP_N, nms_thresh=NMS_THRESH):
    """Decoding and merging (module docstring) for one image of the batch.
    outputs: SegmentHead's; image_size: the resized image's (height, width).
    Returns boxes [K, 4] (resized pixels), scores [K], windows [K, 4], mask_logits [K, 14, 14],
    group [K] (index into groups()), best first."""
    all_boxes, all_scores, all_windows, all_masks, all_groups = [], [], [], [], []
    for g, (level, stride, window) in enumerate(groups()):
        objectness, logits = outputs[level][window]
        objectness = objectness[image_index, 0].reshape(-1)
        height, width = logits.shape[-2:]
        logits = logits[image_index].reshape(MASK_SIZE * MASK_SIZE, -1)
        top = objectness.topk(min(pre_nms, objectness.numel())).indices
        windows = window_boxes(height, width, stride, window)[top]
        masks = logits[:, top].t().reshape(-1, MASK_SIZE, MASK_SIZE)
        boxes, nonempty = mask_boxes(masks, windows)
        boxes = box_ops.clip_boxes_to_image(boxes, image_size)
        large = torch.zeros_like(nonempty)
        large[box_ops.remove_small_boxes(boxes, MIN_BOX_SIZE)] = True
        keep = nonempty & large
        all_boxes.append(boxes[keep])
        all_scores.append(torch.sigmoid(objectness[top][keep]))
        all_windows.append(windows[keep])
        all_masks.append(masks[keep])
        all_groups.append(torch.full((int(keep.sum()),), g, dtype=torch.int64))
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    keep = box_ops.nms(boxes, scores, nms_thresh)[:post_nms]
    return (boxes[keep], scores[keep], torch.cat(all_windows)[keep], torch.cat(all_masks)[keep],
            torch.cat(all_groups)[keep])


def paste_mask_crops(mask_logits, boxes, image_size, padding=1):
    """torchvision's paste_masks_in_image on sigmoid(mask_logits), thresholded at > 0.5, but
    returning each mask as (y0, x0, bool crop) instead of a full image, so that a thousand masks
    fit in memory. mask_logits [K, M, M]; boxes [K, 4] in the image's pixels; image_size (h, w).
    Every step is torchvision's: pad, expand the box by (M + 2 padding) / M in float32, truncate
    toward zero, bilinear resize to (y2 - y1 + 1, x2 - x1 + 1) (at least 1), clip to the image."""
    masks, scale = expand_masks(torch.sigmoid(mask_logits)[:, None], padding=padding)
    boxes = expand_boxes(boxes.float(), scale).to(dtype=torch.int64)
    im_h, im_w = image_size
    crops = []
    for mask, box in zip(masks, boxes):
        x1, y1, x2, y2 = (int(v) for v in box)
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        resized = F.interpolate(mask[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x_0, x_1 = max(x1, 0), min(x2 + 1, im_w)
        y_0, y_1 = max(y1, 0), min(y2 + 1, im_h)
        if y_1 <= y_0 or x_1 <= x_0:  # a window beyond the image's right or bottom edge
            y_1, x_1 = y_0, x_0
        crop = resized[y_0 - y1:y_1 - y1, x_0 - x1:x_1 - x1]
        crops.append((y_0, x_0, (crop > 0.5).numpy()))
    return crops


def crops_to_masks(crops, image_size):
    """(y0, x0, crop) list -> bool [K, H, W]."""
    masks = np.zeros((len(crops),) + tuple(image_size), bool)
    for mask, (y0, x0, crop) in zip(masks, crops):
        mask[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return masks


def paste_segment_masks(mask_logits, boxes, image_size):
    """The reference: torchvision's paste_masks_in_image itself, > 0.5: bool [K, H, W]."""
    pasted = paste_masks_in_image(torch.sigmoid(mask_logits)[:, None], boxes.float(), image_size)
    return (pasted[:, 0] > 0.5).numpy()


class SegmentProposer(nn.Module):
    """transform, backbone (fpn, P2..P6), segment_head. Training: model(images, targets with
    boxes and masks) returns {"loss_objectness", "loss_mask"}. Eval: model(images) returns per
    image {"boxes" (the mask boxes, original pixels), "scores", "windows" (original pixels),
    "mask_logits" [K, 14, 14], "crops" (paste_mask_crops in the original image)}."""

    def __init__(self):
        super().__init__()
        self.variant = "segments"
        self.transform = make_transform()
        self.backbone = build_backbone("segments")
        self.segment_head = SegmentHead()
        self.sampler = det_utils.BalancedPositiveNegativeSampler(SEGMENT_SAMPLES,
                                                                 SEGMENT_POSITIVE_FRACTION)

    def forward(self, images, targets=None):
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, targets = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        if self.training:
            return self.losses(list(features.values()), targets)
        outputs = self.segment_head(features)
        results = []
        for i, (size, original) in enumerate(zip(image_list.image_sizes, original_sizes)):
            boxes, scores, windows, masks, _ = select_segments(outputs, size, i)
            windows = resize_boxes(windows, size, original)
            results.append({"boxes": resize_boxes(boxes, size, original), "scores": scores,
                            "windows": windows, "mask_logits": masks,
                            "crops": paste_mask_crops(masks, windows, original)})
        return results

    def losses(self, features, targets):
        """The MLPs run only where the loss reads them: at the sampled locations (objectness)
        and at every positive one (masks), through WindowMLP.forward_at."""
        head = {5: self.segment_head.window5, 7: self.segment_head.window7}
        grids = [(level, stride, window, features[level].shape[-2:])
                 for level, stride, window in groups()]
        labels, matched = [], []
        for target in targets:
            per_group = [segment_targets(target["boxes"], window_boxes(h, w, stride, window), g)
                         for g, (_, stride, window, (h, w)) in enumerate(grids)]
            labels.append(torch.cat([label for label, _ in per_group]))
            matched.append(torch.cat([m for _, m in per_group]))
        positive, negative = self.sampler(labels)
        offsets = np.cumsum([0] + [h * w for *_, (h, w) in grids])
        objectness_logits, objectness_labels, mask_logits, mask_targets = [], [], [], []
        for i, target in enumerate(targets):
            sampled = (positive[i] | negative[i]).bool()
            wanted = sampled | (labels[i] == 1)
            for g, (level, stride, window, (h, w)) in enumerate(grids):
                chosen = torch.nonzero(wanted[offsets[g]:offsets[g + 1]]).flatten()
                if len(chosen) == 0:
                    continue
                index = chosen + int(offsets[g])
                objectness, masks = head[window].forward_at(features[level][i], chosen // w,
                                                            chosen % w)
                take = sampled[index]
                objectness_logits.append(objectness[take])
                objectness_labels.append(labels[i][index][take])
                is_positive = labels[i][index] == 1
                if is_positive.any():
                    windows = window_boxes(h, w, stride, window)[chosen[is_positive]]
                    mask_logits.append(masks[is_positive])
                    mask_targets.append(project_masks_on_boxes(
                        target["masks"], windows, matched[i][index][is_positive], MASK_SIZE
                    ).reshape(int(is_positive.sum()), -1))
        loss_objectness = F.binary_cross_entropy_with_logits(torch.cat(objectness_logits),
                                                             torch.cat(objectness_labels))
        if mask_logits:
            loss_mask = F.binary_cross_entropy_with_logits(torch.cat(mask_logits),
                                                           torch.cat(mask_targets))
        else:
            loss_mask = loss_objectness * 0
        return {"loss_objectness": loss_objectness, "loss_mask": loss_mask}


def segment_targets(gt_boxes, windows, group):
    """Labels per location of one window size (1 positive, 0 negative, -1 ignored) and the
    index of each location's object, by the rule of the module docstring.
    gt_boxes: [G, 4] resized pixels; windows: [L, 4] of groups()[group] -> (labels, matched)."""
    _, stride, window = groups()[group]
    count = windows.shape[0]
    labels = torch.zeros(count, dtype=torch.float32)
    matched = torch.zeros(count, dtype=torch.int64)
    if gt_boxes.numel() == 0:
        return labels, matched
    sizes = torch.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1])
    log_canonical = torch.tensor([math.log(canonical_size(s, k)) for _, s, k in groups()])
    nearest = (torch.log(sizes)[:, None] - log_canonical[None]).abs().argmin(1)  # [G]
    mine = nearest == group
    centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    window_centres = (windows[:, :2] + windows[:, 2:]) / 2
    offset = (window_centres[:, None, :] - centres[None]).abs()  # [L, G, 2]
    near = (offset <= stride).all(-1)  # [L, G]
    positive = near & mine[None]
    distance = offset.pow(2).sum(-1)
    distance = torch.where(positive, distance, torch.full_like(distance, float("inf")))
    best = distance.argmin(1)
    is_positive = positive.any(1)
    scale = (sizes / canonical_size(stride, window)).log2().abs() <= 1
    ignored = ((offset <= 2 * stride).all(-1) & scale[None]).any(1) & ~is_positive
    labels[is_positive] = 1
    labels[ignored] = -1
    matched[is_positive] = best[is_positive]
    return labels, matched


def build_seed_model(variant):
    """The untrained model of a variant (training mode, as torch builds modules)."""
    return SegmentProposer() if variant == "segments" else SeedRPN(variant)


def seed_metadata(variant):
    """What the C++ side needs to rebuild the variant from the file alone."""
    levels = {"fpn": ["p2", "p3", "p4", "p5", "p6"], "c4": ["c4"], "p2": ["p2"],
              "topdown_no_lateral": ["p2", "p3", "p4", "p5", "p6"],
              "lateral_no_topdown": ["p2", "p3", "p4", "p5", "p6"],
              "segments": ["p2", "p3", "p4", "p5", "p6"]}[variant]
    metadata = {
        "format": "fpn",
        "arch": f"seed_{variant}",
        "variant": variant,
        "frozen_bn_eps": repr(BN_EPS),
        "min_size": str(MIN_SIZE),
        "max_size": str(MAX_SIZE),
        "image_mean": json.dumps(IMAGE_MEAN),
        "image_std": json.dumps(IMAGE_STD),
        "backbone": "resnet_basic_w16_1111",
        "fpn_channels": str(FPN_CHANNELS),
        "levels": json.dumps(levels),
        "nms_thresh": str(NMS_THRESH),
        "post_nms_top_n": str(POST_NMS_TOP_N),
        "source": "tools/train_seed.py",
    }
    if variant == "segments":
        metadata.update(windows=json.dumps(list(WINDOWS)), mask_size=str(MASK_SIZE),
                        strides=json.dumps(list(SEGMENT_STRIDES)),
                        hidden=str(SEGMENT_HIDDEN), pre_nms_top_n=str(PRE_NMS_PER_GROUP),
                        canonical_fraction="4/7", merge="box NMS on mask boxes, all levels")
    else:
        metadata.update(anchor_sizes=json.dumps([list(s) for s in anchor_sizes(variant)]),
                        aspect_ratios=json.dumps(list(ASPECT_RATIOS)),
                        pre_nms_top_n=str(PRE_NMS_PER_LEVEL * 5 // num_levels(variant)))
    return metadata


def load_seed_model(path):
    """The model of `path` (its metadata names the variant) in eval mode; every tensor must match
    the architecture exactly. The metadata is kept in model.seed_metadata."""
    tensors, metadata = load_file(path)
    model = build_seed_model(metadata["variant"])
    expected = {k: v for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")}
    extra = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors))
    if extra or missing:
        raise KeyError(f"{path}: unexpected tensors {extra}, missing {missing}")
    state = model.state_dict()
    for name, array in tensors.items():
        if tuple(array.shape) != tuple(expected[name].shape):
            raise ValueError(f"{path}: {name} has shape {list(array.shape)}, "
                             f"expected {list(expected[name].shape)}")
        state[name] = torch.from_numpy(array.astype(np.float32))
    model.load_state_dict(state, strict=True)
    model.eval()
    model.seed_metadata = metadata
    return model
