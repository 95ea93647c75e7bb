"""COCO-style average recall of class-agnostic proposals, boxes or masks, in numpy.

What pycocotools' COCOeval computes for AR@k (useCats=0, one category, no crowd regions):
  - per image, the proposals sorted by score (stable: ties keep their input order), the first
    max(MAX_DETS) kept;
  - at each IoU threshold t of 0.50, 0.55, ..., 0.95 (np.linspace(.5, .95, 10), as COCOeval),
    each proposal in order takes the unmatched ground truth of highest IoU >= t, preferring
    ground truth inside the area range (ties: the later ground truth, as COCOeval's loop);
    ground truth outside the range is "ignored": it can absorb a proposal but does not count;
  - a proposal of rank r (0-based) counts for AR@k when r < k, which is COCOeval's truncation to
    the first k since the matching is sequential;
  - recall(t, range, k) = matched counted ground truth / counted ground truth, over all images;
    AR(range, k) = the mean of recall over the ten thresholds; None when the range has no ground
    truth (COCOeval's -1).
Area ranges are COCO's, on the ground truth's area (COCO's annotation area: the mask's pixel
count for instance masks): all [0, 1e10], small [0, 32^2], medium [32^2, 96^2], large [96^2,
1e10], ends included (an area of exactly 32^2 is small and medium both, as in COCOeval).

    evaluator = RecallEvaluator()
    evaluator.add(iou [D, G], scores [D], gt_areas [G])        (or add_boxes / add_masks)
    evaluator.result() -> {"AR@10": ..., "AR@1000": ..., "AR_small@1000": ..., ...}
"""
import numpy as np

from .evaluate import box_iou, mask_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
MAX_DETS = (10, 100, 1000)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}
UNMATCHED = np.iinfo(np.int64).max


def match_ranks(iou, ignore, thresholds=IOU_THRESHOLDS):
    """COCOeval's greedy matching of score-ordered proposals.
    iou: [D, G], rows in score order; ignore: [G] bool. Returns [T, G] int: the rank of the
    proposal matched to each ground truth at each threshold, or UNMATCHED."""
    iou = np.asarray(iou, np.float64)
    ignore = np.asarray(ignore, bool)
    num_dets, num_gt = iou.shape
    ranks = np.full((len(thresholds), num_gt), UNMATCHED, np.int64)
    if num_dets == 0 or num_gt == 0:
        return ranks
    thresholds = np.minimum(np.asarray(thresholds, np.float64), 1 - 1e-10)
    taken = np.zeros((len(thresholds), num_gt), bool)
    rows = np.arange(len(thresholds))
    # Only proposals with some IoU >= the lowest threshold can match anything.
    for d in np.flatnonzero(iou.max(1) >= thresholds.min()):
        open_ = ~taken & (iou[d][None] >= thresholds[:, None])  # [T, G]
        # COCOeval visits counted ground truth first and stops at the first ignored one once it
        # has a counted match; within a group the last of equal IoUs wins.
        chosen = np.zeros(len(thresholds), np.int64)
        found = np.zeros(len(thresholds), bool)
        for group in (~ignore, ignore):
            candidates = np.where(open_ & group[None], iou[d][None], -np.inf)
            last = num_gt - 1 - np.argmax(candidates[:, ::-1], axis=1)
            here = ~found & np.isfinite(candidates[rows, last])
            chosen[here] = last[here]
            found |= here
        taken[rows[found], chosen[found]] = True
        ranks[rows[found], chosen[found]] = d
    return ranks


class RecallEvaluator:
    """Accumulates per-image matches; memory is per ground truth, not per proposal."""

    def __init__(self, max_dets=MAX_DETS, area_ranges=AREA_RANGES, thresholds=IOU_THRESHOLDS):
        self.max_dets = tuple(max_dets)
        self.area_ranges = dict(area_ranges)
        self.thresholds = np.asarray(thresholds, np.float64)
        self._ranks = {name: [] for name in self.area_ranges}  # [T, G] per image

    def add(self, iou, scores, gt_areas):
        """One image: iou [D, G] of its proposals (any order) against its ground truth, the
        proposals' scores [D] and the ground truth's areas [G]."""
        scores = np.asarray(scores, np.float64).reshape(-1)
        gt_areas = np.asarray(gt_areas, np.float64).reshape(-1)
        iou = np.asarray(iou, np.float64).reshape(len(scores), len(gt_areas))
        order = np.argsort(-scores, kind="mergesort")[:max(self.max_dets)]
        iou = iou[order]
        for name, (low, high) in self.area_ranges.items():
            ignore = (gt_areas < low) | (gt_areas > high)
            ranks = match_ranks(iou, ignore, self.thresholds)
            self._ranks[name].append(ranks[:, ~ignore])

    def add_boxes(self, boxes, scores, gt_boxes, gt_areas):
        self.add(box_iou(boxes, gt_boxes), scores, gt_areas)

    def add_masks(self, masks, scores, gt_masks):
        """bool masks [D, H, W] and gt_masks [G, H, W]; areas are the masks' pixel counts."""
        gt_masks = np.asarray(gt_masks, bool)
        self.add(mask_iou(masks, gt_masks), scores, gt_masks.reshape(len(gt_masks), -1).sum(1))

    def recall(self, area="all", max_det=None):
        """[T] recall at each IoU threshold, or None without ground truth in the range."""
        max_det = max(self.max_dets) if max_det is None else max_det
        ranks = [r for r in self._ranks[area] if r.shape[1]]
        if not ranks:
            return None
        ranks = np.concatenate(ranks, axis=1)
        return (ranks < max_det).mean(axis=1)

    def result(self):
        """{"AR@k" and "AR_<area>@k" for every k of max_dets and every area but "all"}."""
        out = {}
        for k in self.max_dets:
            for area in self.area_ranges:
                recall = self.recall(area, k)
                key = f"AR@{k}" if area == "all" else f"AR_{area}@{k}"
                out[key] = None if recall is None else float(recall.mean())
        return out


def mask_iou_crops(crops, gt_masks):
    """mask_iou of pasted masks given as (y0, x0, bool crop) against bool gt_masks [G, H, W],
    without building the full masks: [D, G]."""
    gt_masks = np.asarray(gt_masks, bool)
    gt_areas = gt_masks.reshape(len(gt_masks), -1).sum(1).astype(np.float64)
    iou = np.zeros((len(crops), len(gt_masks)))
    for d, (y0, x0, crop) in enumerate(crops):
        area = float(crop.sum())
        if area == 0 or len(gt_masks) == 0:
            continue
        window = gt_masks[:, y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        inter = (window & crop[None]).reshape(len(gt_masks), -1).sum(1)
        union = area + gt_areas - inter
        iou[d] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return iou
