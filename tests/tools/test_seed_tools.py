"""The seed experiment's tooling (issue 16): the AR evaluator on hand-derived cases and against a
line-by-line transcription of COCOeval, the segment network's decoding parts against
torchvision's, the ablated necks against their formulas, and the committed seed files."""
import json
import os
import sys
import unittest

import numpy as np
import torch
import torch.nn.functional as F

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "tools"))
from fpn_tools import evaluate, recall, seed_models  # noqa: E402
from fpn_tools.safetensors_io import load_file  # noqa: E402

SEED_DATA = os.path.join(PROJECT, "examples", "data", "seed")


def ar_of(images, max_dets=recall.MAX_DETS):
    """RecallEvaluator over images given as (iou [D, G], scores [D], gt_areas [G])."""
    evaluator = recall.RecallEvaluator(max_dets)
    for iou, scores, areas in images:
        evaluator.add(np.asarray(iou, float).reshape(len(scores), len(areas)), scores, areas)
    return evaluator


class HandDerivedRecall(unittest.TestCase):
    def test_one_ground_truth_counts_the_thresholds_its_proposal_passes(self):
        # [0, 0, 10, 10] against [0, 0, 10, 7.2]: IoU 0.72 passes 0.50 ... 0.70, 5 of 10.
        evaluator = recall.RecallEvaluator()
        evaluator.add_boxes([[0, 0, 10, 7.2]], [0.9], [[0, 0, 10, 10]], [100])
        np.testing.assert_array_equal(evaluator.recall("all", 1000), [1] * 5 + [0] * 5)
        result = evaluator.result()
        self.assertAlmostEqual(result["AR@10"], 0.5, places=12)
        self.assertAlmostEqual(result["AR_small@1000"], 0.5, places=12)
        self.assertIsNone(result["AR_medium@1000"])  # no medium ground truth: COCOeval's -1
        self.assertIsNone(result["AR_large@10"])

    def test_two_objects_and_the_proposal_budget(self):
        # Object A found at IoU 0.97 (all ten thresholds), B at 0.52 (one): (10 + 1) / 20.
        # B's proposal scores highest, ten misses come next, A's proposal is twelfth: within the
        # first 10 only B counts, 1 / 20.
        iou = [[0.0, 0.52]] + [[0.1, 0.0]] * 10 + [[0.97, 0.0]]
        scores = [0.99] + [0.9] * 10 + [0.5]
        result = ar_of([(iou, scores, [2000, 2000])]).result()
        self.assertAlmostEqual(result["AR@10"], 0.05, places=12)
        self.assertAlmostEqual(result["AR@100"], 0.55, places=12)
        self.assertAlmostEqual(result["AR@1000"], 0.55, places=12)
        self.assertAlmostEqual(result["AR_medium@100"], 0.55, places=12)
        # Order is by score, not by position in the input.
        shuffled = [iou[11]] + iou[:11]
        again = ar_of([(shuffled, [scores[11]] + scores[:11], [2000, 2000])]).result()
        self.assertEqual(again, result)

    def test_greedy_matching_in_score_order(self):
        # The first proposal overlaps G1 at 0.9 and G2 at 0.8 and takes G1 (9 thresholds up to
        # 0.90); the second reaches G2 at 0.6 only (3 thresholds): 12 / 20.
        result = ar_of([([[0.9, 0.8], [0.0, 0.6]], [0.9, 0.8], [500, 500])]).result()
        self.assertAlmostEqual(result["AR@1000"], 0.6, places=12)
        # Swapped scores: the 0.6 proposal goes first and takes G2 at 0.50 ... 0.60; the other
        # then takes G1, its best, wherever it can (up to 0.90), never G2: (9 + 3) / 20 again.
        result = ar_of([([[0.9, 0.8], [0.0, 0.6]], [0.8, 0.9], [500, 500])]).result()
        self.assertAlmostEqual(result["AR@1000"], 0.6, places=12)

    def test_ground_truth_outside_the_area_range_absorbs_but_does_not_count(self):
        # A small object (area 500) and a large one (20000). The first proposal overlaps the
        # large one at 0.8 and the small one at 0.6; the second the small one at 0.7.
        # "small": the large object is ignored, and COCOeval prefers counted ground truth: the
        # first proposal takes the small one at 0.50 ... 0.60 and is absorbed by the large one at
        # 0.65 ... 0.80; the second takes the small one at 0.65, 0.70: 5 / 10.
        # "all": the first takes the large object (its best) at 0.50 ... 0.80 (7), the second
        # the small one at 0.50 ... 0.70 (5): 12 / 20. "large": 7 / 10.
        images = [([[0.6, 0.8], [0.7, 0.0]], [0.9, 0.8], [500, 20000])]
        result = ar_of(images).result()
        self.assertAlmostEqual(result["AR_small@1000"], 0.5, places=12)
        self.assertAlmostEqual(result["AR@1000"], 0.6, places=12)
        self.assertAlmostEqual(result["AR_large@1000"], 0.7, places=12)
        self.assertIsNone(result["AR_medium@1000"])

    def test_area_range_ends_are_inclusive_and_images_pool(self):
        # An area of exactly 32^2 is small and medium both. Image 1: that object found at 0.77
        # (6 thresholds). Image 2: a medium object (5000) missed, a large one (9216 = 96^2, so
        # medium and large) found at 0.93 (9). Medium: (6 + 0 + 9) / 30; small 6 / 10;
        # large 9 / 10; all (6 + 0 + 9) / 30.
        images = [([[0.77]], [0.5], [1024]), ([[0.0, 0.93]], [0.5], [5000, 9216])]
        result = ar_of(images).result()
        self.assertAlmostEqual(result["AR_small@1000"], 0.6, places=12)
        self.assertAlmostEqual(result["AR_medium@1000"], 0.5, places=12)
        self.assertAlmostEqual(result["AR_large@1000"], 0.9, places=12)
        self.assertAlmostEqual(result["AR@1000"], 0.5, places=12)

    def test_no_proposals_and_no_objects(self):
        result = ar_of([(np.zeros((0, 2)), [], [100, 5000])]).result()
        self.assertEqual(result["AR@1000"], 0.0)
        self.assertEqual(result["AR_small@10"], 0.0)
        empty = ar_of([(np.zeros((3, 0)), [0.3, 0.2, 0.1], [])]).result()
        self.assertIsNone(empty["AR@1000"])

    def test_masks(self):
        # A 10x10 square and a proposal one row lower: 90 / 110 = 0.818, 7 thresholds up to
        # 0.80. Area 100: small.
        gt = np.zeros((1, 32, 32), bool)
        gt[0, 5:15, 5:15] = True
        proposal = np.zeros((1, 32, 32), bool)
        proposal[0, 6:16, 5:15] = True
        evaluator = recall.RecallEvaluator()
        evaluator.add_masks(proposal, [1.0], gt)
        self.assertAlmostEqual(evaluator.result()["AR@10"], 0.7, places=12)
        self.assertAlmostEqual(evaluator.result()["AR_small@10"], 0.7, places=12)
        # The crop form gives the same IoU without full masks.
        crops = [(6, 5, np.ones((10, 10), bool)), (0, 0, np.zeros((0, 0), bool)),
                 (30, 30, np.ones((2, 2), bool))]
        iou = recall.mask_iou_crops(crops, gt)
        np.testing.assert_allclose(iou[:, 0], [90 / 110, 0, 0], rtol=0, atol=1e-15)


def coco_recall_brute(images, max_det, area_range, thresholds=recall.IOU_THRESHOLDS):
    """COCOeval.evaluateImg and accumulate (useCats=0, no crowd), transcribed loop for loop:
    recall per threshold, or None without counted ground truth. images: (iou, scores, areas)."""
    low, high = area_range
    matched_counted = np.zeros(len(thresholds))
    num_counted = 0
    for iou, scores, areas in images:
        iou = np.asarray(iou, float).reshape(len(scores), len(areas))
        ignore = [a < low or a > high for a in areas]
        gt_order = np.argsort(ignore, kind="mergesort")
        gt_ignore = [ignore[i] for i in gt_order]
        dt_order = np.argsort([-s for s in scores], kind="mergesort")[:max(recall.MAX_DETS)]
        ious = iou[dt_order][:, gt_order] if len(dt_order) and len(gt_order) else []
        gtm = np.zeros((len(thresholds), len(gt_order)))
        dtm = np.zeros((len(thresholds), len(dt_order)))
        dt_ig = np.zeros((len(thresholds), len(dt_order)))
        if len(ious):
            for tind, t in enumerate(thresholds):
                for dind in range(len(dt_order)):
                    best = min([t, 1 - 1e-10])
                    m = -1
                    for gind in range(len(gt_order)):
                        if gtm[tind, gind] > 0:
                            continue
                        if m > -1 and gt_ignore[m] == 0 and gt_ignore[gind] == 1:
                            break
                        if ious[dind, gind] < best:
                            continue
                        best = ious[dind, gind]
                        m = gind
                    if m == -1:
                        continue
                    dt_ig[tind, dind] = gt_ignore[m]
                    dtm[tind, dind] = m + 1
                    gtm[tind, m] = dind + 1
        num_counted += int(np.sum(np.logical_not(gt_ignore)))
        tps = np.logical_and(dtm[:, :max_det], np.logical_not(dt_ig[:, :max_det]))
        matched_counted += tps.sum(axis=1)
    if num_counted == 0:
        return None
    return matched_counted / num_counted


class AgainstCocoTranscription(unittest.TestCase):
    def test_random_cases(self):
        rng = np.random.default_rng(2017)
        areas_pool = [100.0, 1023.0, 1024.0, 1025.0, 5000.0, 9216.0, 9217.0, 40000.0]
        cases = 0
        for case in range(300):
            images = []
            for _ in range(int(rng.integers(1, 4))):
                num_gt = int(rng.integers(0, 6))
                num_dt = int(rng.integers(0, 25))
                gt_boxes = rng.uniform(0, 60, (num_gt, 2))
                gt_boxes = np.concatenate([gt_boxes, gt_boxes + rng.uniform(4, 40, (num_gt, 2))], 1)
                # Proposals jittered from the objects (a spread of IoUs) and some at random.
                source = rng.integers(0, max(num_gt, 1), num_dt)
                dt_boxes = (gt_boxes[source] if num_gt else np.zeros((num_dt, 4))) \
                    + rng.normal(0, rng.uniform(0.5, 6), (num_dt, 4))
                dt_boxes[:, 2:] = np.maximum(dt_boxes[:, 2:], dt_boxes[:, :2] + 1)
                iou = evaluate.box_iou(dt_boxes, gt_boxes)
                if rng.uniform() < 0.4:
                    # IoUs from a few values: equal IoUs to two objects decide which one a
                    # proposal takes (COCOeval: the later one), and that changes the recall.
                    iou = rng.choice([0.0, 0.4, 0.5, 0.62, 0.75, 0.75, 0.9, 1.0], iou.shape)
                if num_dt > 1 and rng.uniform() < 0.3:
                    iou[1] = iou[0]  # equal IoU rows, and below equal scores
                scores = np.round(rng.uniform(0, 1, num_dt), 1)  # many ties
                if rng.uniform() < 0.3:
                    areas = rng.choice(areas_pool, num_gt)
                else:
                    areas = rng.uniform(10, 20000, num_gt)
                images.append((iou, scores, areas))
            max_dets = (1, 3, 10) if case % 2 else (5, 1000)
            result = ar_of(images, max_dets)
            for area, area_range in recall.AREA_RANGES.items():
                for max_det in max_dets:
                    expected = coco_recall_brute(images, max_det, area_range)
                    got = result.recall(area, max_det)
                    if expected is None:
                        self.assertIsNone(got, (case, area, max_det))
                        continue
                    cases += 1
                    np.testing.assert_array_equal(got, expected, err_msg=f"{case} {area} {max_det}")
        self.assertGreater(cases, 1000)


class SegmentDecoding(unittest.TestCase):
    def test_crops_paste_like_torchvision_also_beyond_the_image(self):
        generator = torch.Generator().manual_seed(5)
        logits = torch.randn(60, 14, 14, generator=generator) * 3
        # Window boxes: centres inside the image, sides up to beyond its edges on both sides.
        size = (97, 131)
        centres = torch.rand(60, 2, generator=generator) * torch.tensor([131.0, 97.0])
        sides = torch.rand(60, 2, generator=generator) * 150 + 0.3
        boxes = torch.cat([centres - sides / 2, centres + sides / 2], 1)
        boxes[0] = torch.tensor([-7.9, -3.2, 5.3, 1.1])  # negative corners truncate toward 0
        boxes[1] = torch.tensor([-0.6, -0.4, 0.2, 0.3])  # smaller than a pixel
        expected = seed_models.paste_segment_masks(logits, boxes, size)
        crops = seed_models.paste_mask_crops(logits, boxes, size)
        np.testing.assert_array_equal(seed_models.crops_to_masks(crops, size), expected)
        self.assertGreater(expected.sum(), 10000)
        # Box [-7.9, -3.2, 5.3, 1.1] grows by 16/14 about its centre to [-8.84, -3.51, 6.24,
        # 1.41], truncated to [-8, -3, 6, 1]: rows 0..1 and columns 0..6 of the image at most.
        rows, columns = np.nonzero(expected[0])
        self.assertLessEqual(rows.max(initial=0), 1)
        self.assertLessEqual(columns.max(initial=0), 6)
        self.assertEqual(crops[0][:2], (0, 0))
        self.assertEqual(crops[0][2].shape, (2, 7))
        np.testing.assert_allclose(recall.mask_iou_crops(crops, expected[:7]),
                                   evaluate.mask_iou(expected, expected[:7]), atol=1e-12)
        # torchvision's own paste fails on a box wholly right of the image (no kept proposal's
        # window is: it holds its mask box, which is clipped to the image); the crop is empty.
        beyond = seed_models.paste_mask_crops(logits[:1], torch.tensor([[150.0, 20, 170, 40]]),
                                              size)
        self.assertEqual(beyond[0][2].size, 0)

    def test_mask_boxes_and_windows(self):
        # Level stride 8, 5x5 windows: location (y 1, x 2) is centred at (20, 12), side 40.
        windows = seed_models.window_boxes(3, 4, 8, 5)
        np.testing.assert_array_equal(windows[1 * 4 + 2].numpy(), [0, -8, 40, 32])
        logits = torch.full((2, 14, 14), -1.0)
        logits[0, 3:6, 7:14] = 2.0  # rows 3..5, columns 7..13
        boxes, nonempty = seed_models.mask_boxes(logits, torch.tensor([[0.0, -8, 28, 20]] * 2))
        np.testing.assert_allclose(boxes[0].numpy(), [14, -2, 28, 4])  # 2 px cells
        self.assertEqual(nonempty.tolist(), [True, False])

    def test_window_mlp_at_locations_is_the_convolution(self):
        torch.manual_seed(3)
        mlp = seed_models.WindowMLP(8, 7, hidden=16)
        feature = torch.randn(8, 9, 11)
        objectness, masks = mlp(feature[None])
        ys, xs = torch.tensor([0, 4, 8, 8]), torch.tensor([0, 5, 10, 0])
        at_objectness, at_masks = mlp.forward_at(feature, ys, xs)
        torch.testing.assert_close(at_objectness, objectness[0, 0, ys, xs])
        torch.testing.assert_close(at_masks, masks[0][:, ys, xs].t())

    def test_targets_pick_one_window_size_and_nearby_locations(self):
        # A 30x30 object centred at (100, 60): its nearest canonical size is 32 (stride 8, 7x7
        # windows, 4/7 of 56).
        box = torch.tensor([[85.0, 45.0, 115.0, 75.0]])
        group = [g for g, (_, s, k) in enumerate(seed_models.groups()) if (s, k) == (8, 7)][0]
        windows = seed_models.window_boxes(20, 20, 8, 7)
        labels, matched = seed_models.segment_targets(box, windows, group)
        positive = torch.nonzero(labels == 1).flatten()
        # Centres (x + 0.5) * 8 within 8 of 100: x + 0.5 in [11.5, 13.5] -> x 11, 12, 13;
        # y + 0.5 in [6.5, 8.5] -> y 6, 7, 8.
        expected = sorted(y * 20 + x for y in (6, 7, 8) for x in (11, 12, 13))
        self.assertEqual(positive.tolist(), expected)
        self.assertTrue((matched[positive] == 0).all())
        # The same object is ignored (within 2 s, scale within 2x) near the 5x5 windows of
        # stride 8 (canonical 22.9), negative for stride 64.
        other = [g for g, (_, s, k) in enumerate(seed_models.groups()) if (s, k) == (8, 5)][0]
        labels5, _ = seed_models.segment_targets(box, seed_models.window_boxes(20, 20, 8, 5), other)
        self.assertEqual(int((labels5 == 1).sum()), 0)
        self.assertEqual(int((labels5 == -1).sum()), 25)  # x 10..14, y 5..9
        far = [g for g, (_, s, k) in enumerate(seed_models.groups()) if (s, k) == (64, 7)][0]
        labels64, _ = seed_models.segment_targets(box, seed_models.window_boxes(3, 3, 64, 7), far)
        self.assertEqual(labels64.tolist(), [0.0] * 9)


class Necks(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(11)
        self.inputs = {str(i): torch.randn(1, c, 40 >> i, 52 >> i)
                       for i, c in enumerate((16, 32, 64, 128))}
        self.inputs["3"] = torch.randn(1, 128, 5, 7)  # odd sizes: nearest to the exact size

    def test_everything_on_is_torchvision_fpn(self):
        reference = seed_models.build_backbone("fpn").fpn
        neck = seed_models.SeedNeck([16, 32, 64, 128], 64,
                                    extra_blocks=reference.extra_blocks)
        neck.load_state_dict(reference.state_dict())
        with torch.no_grad():
            want, got = reference(self.inputs), neck(self.inputs)
        self.assertEqual(list(got), ["0", "1", "2", "3", "pool"])
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)

    def test_ablations_compute_their_formulas(self):
        x = list(self.inputs.values())
        up = lambda t, like: F.interpolate(t, size=like.shape[-2:], mode="nearest")  # noqa: E731
        with torch.no_grad():
            neck = seed_models.build_backbone("topdown_no_lateral").fpn
            out = neck(self.inputs)
            inner, layer = neck.inner_blocks, neck.layer_blocks
            t5 = inner[3](x[3])
            t2 = up(up(up(t5, x[2]), x[1]), x[0])
            torch.testing.assert_close(out["0"], layer[0](t2))
            torch.testing.assert_close(out["pool"], F.max_pool2d(layer[3](t5), 1, 2))
            neck = seed_models.build_backbone("lateral_no_topdown").fpn
            out = neck(self.inputs)
            for i in range(4):
                torch.testing.assert_close(out[str(i)],
                                           neck.layer_blocks[i](neck.inner_blocks[i](x[i])))
            fpn = seed_models.build_backbone("fpn").fpn
            p2 = seed_models.build_backbone("p2").fpn
            p2.load_state_dict(fpn.state_dict(), strict=False)
            self.assertEqual(list(p2(self.inputs)), ["0"])
            torch.testing.assert_close(p2(self.inputs)["0"], fpn(self.inputs)["0"])
        # Slots a neck does not use have no tensors.
        names = set(seed_models.build_backbone("topdown_no_lateral").state_dict())
        self.assertNotIn("fpn.inner_blocks.0.0.weight", names)
        self.assertIn("fpn.inner_blocks.3.0.weight", names)
        names = set(seed_models.build_backbone("p2").state_dict())
        self.assertNotIn("fpn.layer_blocks.1.0.weight", names)
        names = set(seed_models.build_backbone("c4").state_dict())
        self.assertFalse(any(n.startswith("body.layer4") for n in names))


@unittest.skipUnless(os.path.exists(os.path.join(SEED_DATA, "results.json")),
                     "the seed models are not trained yet")
class CommittedSeedModels(unittest.TestCase):
    def test_weights_load_fit_the_budget_and_say_what_they_are(self):
        total = 0
        for variant in seed_models.VARIANTS:
            path = os.path.join(SEED_DATA, f"{variant}.safetensors")
            total += os.path.getsize(path)
            model = seed_models.load_seed_model(path)  # strict: no missing or extra tensors
            self.assertEqual(model.seed_metadata["variant"], variant)
            self.assertEqual(model.seed_metadata["arch"], f"seed_{variant}")
            tensors, _ = load_file(path)
            self.assertTrue(all(t.dtype == np.float16 for t in tensors.values()))
            self.assertTrue(os.path.exists(os.path.join(SEED_DATA, f"{variant}.log")))
        self.assertLessEqual(total, 10 * 1024 * 1024)

    def test_results_cover_every_variant(self):
        with open(os.path.join(SEED_DATA, "results.json")) as f:
            results = json.load(f)
        self.assertEqual(list(results), list(seed_models.VARIANTS))
        for variant, entry in results.items():
            self.assertEqual(entry["held_out_scenes"], 200)
            self.assertEqual(entry["train_scenes"], 3200)
            self.assertEqual(entry["steps"], 800)
            self.assertGreater(entry["box"]["AR@1000"], 0.3, variant)
        self.assertGreater(results["segments"]["mask"]["AR@1000"], 0.2)


if __name__ == "__main__":
    unittest.main()
