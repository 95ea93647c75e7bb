"""AP at IoU 0.5 for boxes and instance masks, COCO-style, in numpy.

Per class: the detections of all images sorted by score (ties keep their input order), each
matched greedily, in that order, to the unmatched ground truth of its image and class with the
highest IoU, if that IoU is at least the threshold; precision made monotone from the right and
read at 101 recall points 0, 0.01, ..., 1 (0 beyond the largest recall reached), then averaged.
The result averages over the classes that have ground truth. No crowd regions, no area ranges,
and no per-image detection cap beyond what the detector applies itself (torchvision: 100).

    images = [{"gt_boxes": [G,4], "gt_labels": [G], "gt_masks": [G,H,W] bool (masks only),
               "boxes": [D,4], "scores": [D], "labels": [D], "masks": [D,H,W] bool}, ...]
    evaluate(images, num_classes) -> {"box": {"per_class": {label: AP}, "mean": mAP},
                                      "mask": {...} (only when every image has masks)}
or, one image at a time, Evaluator(num_classes).add(image) ... .result().

Run as `python3 -m fpn_tools.evaluate` (from tools/) for the self-check.
"""
import numpy as np

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a, b):
    """IoU matrix [len(a), len(b)] of [x1, y1, x2, y2] boxes (x2, y2 exclusive, as torchvision)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_iou(a, b):
    """IoU matrix of bool masks [N, H, W] x [M, H, W]."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    # Explicit sizes: reshape(0, -1) is ambiguous, and an image may have no objects.
    a = a.reshape(a.shape[0], int(np.prod(a.shape[1:]))).astype(np.float32)
    b = b.reshape(b.shape[0], int(np.prod(b.shape[1:]))).astype(np.float32)
    # float32 sums of 0/1 are exact up to 2^24 pixels, far beyond any image here.
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(scores, matched, num_ground_truth):
    """101-point interpolated AP of one class from its detections' scores and match flags."""
    if num_ground_truth == 0:
        return None
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.asarray(matched, bool)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    recall = tp / num_ground_truth
    precision = tp / np.maximum(tp + fp, 1)
    # The envelope: at each rank, the best precision reached at this recall or beyond.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    values = np.zeros(len(RECALL_POINTS))
    inside = index < len(recall)
    values[inside] = precision[index[inside]]
    return float(values.mean())


def _match(iou, scores, threshold):
    """Greedy matching within one image and class; returns a bool per detection."""
    matched = np.zeros(iou.shape[0], bool)
    taken = np.zeros(iou.shape[1], bool)
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[d])
        if candidates.size == 0:
            continue
        g = int(np.argmax(candidates))
        if candidates[g] >= threshold:
            matched[d] = True
            taken[g] = True
    return matched


class Evaluator:
    """Accumulates matches image by image, so masks need not be kept for the whole set."""

    def __init__(self, num_classes, threshold=0.5, kinds=("box", "mask")):
        self.num_classes = num_classes
        self.threshold = threshold
        self.kinds = kinds
        self._scores = {(kind, c): [] for kind in kinds for c in range(1, num_classes)}
        self._matched = {(kind, c): [] for kind in kinds for c in range(1, num_classes)}
        self._num_ground_truth = np.zeros(num_classes, np.int64)

    def add(self, image):
        """One image's ground truth and detections, as described in the module docstring."""
        gt_labels = np.asarray(image["gt_labels"]).reshape(-1)
        labels = np.asarray(image["labels"]).reshape(-1)
        scores = np.asarray(image["scores"], np.float64).reshape(-1)
        for label in range(1, self.num_classes):
            gt = np.flatnonzero(gt_labels == label)
            det = np.flatnonzero(labels == label)
            self._num_ground_truth[label] += len(gt)
            if len(det) == 0:
                continue
            for kind in self.kinds:
                if kind == "box":
                    iou = box_iou(np.asarray(image["boxes"])[det],
                                  np.asarray(image["gt_boxes"])[gt])
                else:
                    iou = mask_iou(np.asarray(image["masks"])[det],
                                   np.asarray(image["gt_masks"])[gt])
                iou = iou.reshape(len(det), len(gt))
                self._scores[kind, label].append(scores[det])
                self._matched[kind, label].append(_match(iou, scores[det], self.threshold))

    def result(self):
        """{kind: {"per_class": {label: AP}, "mean": mean over classes with ground truth}}."""
        results = {}
        for kind in self.kinds:
            per_class = {}
            for label in range(1, self.num_classes):
                scores = self._scores[kind, label]
                matched = self._matched[kind, label]
                ap = average_precision(np.concatenate(scores) if scores else [],
                                       np.concatenate(matched) if matched else [],
                                       int(self._num_ground_truth[label]))
                if ap is not None:
                    per_class[label] = ap
            mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
            results[kind] = {"per_class": per_class, "mean": mean}
        return results


def evaluate(images, num_classes, threshold=0.5):
    """AP@threshold of boxes, and of masks when every image carries them."""
    with_masks = all("masks" in image and "gt_masks" in image for image in images)
    evaluator = Evaluator(num_classes, threshold, ("box", "mask") if with_masks else ("box",))
    for image in images:
        evaluator.add(image)
    return evaluator.result()


def self_check():
    """Hand-checked cases; raises AssertionError on a wrong answer, returns True otherwise."""
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]], np.float64)
    gt_labels = np.array([1, 1, 2])
    masks = np.zeros((3, 64, 64), bool)
    for i, (x1, y1, x2, y2) in enumerate(gt_boxes.astype(int)):
        masks[i, y1:y2, x1:x2] = True

    def image(boxes, scores, labels, det_masks):
        return {"gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_masks": masks,
                "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
                "scores": np.asarray(scores, np.float64), "labels": np.asarray(labels),
                "masks": np.asarray(det_masks, bool).reshape(-1, 64, 64)}

    perfect = evaluate([image(gt_boxes, [0.9, 0.8, 0.7], gt_labels, masks)], 3)
    assert perfect["box"]["mean"] == 1.0 and perfect["mask"]["mean"] == 1.0, perfect

    nothing = evaluate([image([], [], [], [])], 3)
    assert nothing["box"]["mean"] == 0.0 and nothing["mask"]["mean"] == 0.0, nothing

    # Class 1, by score: a hit on gt 0, a miss, a hit on gt 1. Recall 0.5, 0.5, 1; precision
    # 1, 1/2, 2/3, whose envelope is 1, 2/3, 2/3. Recall points 0..0.50 (51 of them) read 1,
    # 0.51..1 (50) read 2/3: AP = (51 + 50 * 2/3) / 101. A duplicate of gt 0 scored below its
    # first hit counts as a miss too, and a class-2 box on a class-1 object is class 2's miss.
    # Class 2: its one object found second, after that miss: AP = 1/2 at every recall point.
    miss = [30, 0, 40, 8]
    boxes = [[0, 0, 10, 10], miss, [20, 20, 40, 40], [1, 0, 10, 10], [50, 0, 60, 30],
             [0, 0, 10, 10]]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.95]
    labels = [1, 1, 1, 1, 2, 2]
    det_masks = np.zeros((6, 64, 64), bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        det_masks[i, y1:y2, x1:x2] = True
    mixed = evaluate([image(boxes, scores, labels, det_masks)], 3)
    # The duplicate at 0.6 comes after the last hit, so it does not change class 1's AP.
    class1 = (51 + 50 * 2 / 3) / 101
    for kind in ("box", "mask"):
        per_class = mixed[kind]["per_class"]
        assert abs(per_class[1] - class1) < 1e-12, (kind, per_class)
        assert abs(per_class[2] - 0.5) < 1e-12, (kind, per_class)
        assert abs(mixed[kind]["mean"] - (class1 + 0.5) / 2) < 1e-12, (kind, mixed)

    # A box just under IoU 0.5 misses; just over hits: IoU of [0,0,10,10] and [0,0,10,w] is w/10
    # for w <= 10, so w = 4.9 misses and w = 5.1 hits.
    below = evaluate([{"gt_boxes": gt_boxes[:1], "gt_labels": [1], "boxes": [[0, 0, 10, 4.9]],
                       "scores": [1.0], "labels": [1]}], 2)
    above = evaluate([{"gt_boxes": gt_boxes[:1], "gt_labels": [1], "boxes": [[0, 0, 10, 5.1]],
                       "scores": [1.0], "labels": [1]}], 2)
    assert below["box"]["mean"] == 0.0 and above["box"]["mean"] == 1.0, (below, above)

    # An image without objects: its detections are all misses of their classes.
    empty = {"gt_boxes": np.zeros((0, 4)), "gt_labels": np.zeros(0, int),
             "gt_masks": np.zeros((0, 64, 64), bool), "boxes": gt_boxes[:1], "scores": [0.99],
             "labels": [1], "masks": masks[:1]}
    with_empty = evaluate([image(gt_boxes, [0.9, 0.8, 0.7], gt_labels, masks), empty], 3)
    # Class 1: the miss scores highest, then two hits: precision 0, 1/2, 2/3, envelope 2/3.
    for kind in ("box", "mask"):
        assert abs(with_empty[kind]["per_class"][1] - 2 / 3) < 1e-12, with_empty
        assert with_empty[kind]["per_class"][2] == 1.0, with_empty
    return True


if __name__ == "__main__":
    self_check()
    print("evaluate self-check passed")
