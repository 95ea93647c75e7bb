"""The demo model's tooling: the project's own AP evaluator (hand-derived cases), the scene
generator's ground truth, and the committed demo files' consistency with both."""
import json
import os
import sys
import unittest

import numpy as np

PROJECT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(PROJECT, "tools"))
from fpn_tools import demo_model, evaluate, shapes  # noqa: E402
from fpn_tools.safetensors_io import load_file  # noqa: E402

DATA = os.path.join(PROJECT, "examples", "data")


class Evaluator(unittest.TestCase):
    def test_hand_derived_cases(self):
        self.assertTrue(evaluate.self_check())


class Scenes(unittest.TestCase):
    def test_seeded_and_boxes_tight_around_visible_masks(self):
        first_rgb, first = shapes.make_scene(1234, 200, 300)
        second_rgb, second = shapes.make_scene(1234, 200, 300)
        np.testing.assert_array_equal(first_rgb, second_rgb)
        self.assertEqual(len(first), len(second))
        self.assertGreaterEqual(len(first), 1)
        covered = np.zeros((200, 300), int)
        for thing in first:
            self.assertIn(thing["label"], range(1, 6))
            ys, xs = np.nonzero(thing["mask"])
            self.assertEqual(list(thing["box"]), [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            covered += thing["mask"]
        self.assertLessEqual(covered.max(), 1, "visible masks must not overlap")


class CommittedDemo(unittest.TestCase):
    def test_weights_fit_the_architecture_and_say_what_they_are(self):
        path = os.path.join(DATA, "demo_shapes_maskrcnn.safetensors")
        self.assertLessEqual(os.path.getsize(path), 10 * 1024 * 1024)
        model = demo_model.load_demo_model(path)  # refuses missing, extra or misshapen tensors
        metadata = model.demo_metadata
        self.assertEqual(metadata["arch"], "maskrcnn_shapes_demo")
        self.assertEqual(json.loads(metadata["class_names"]), shapes.CLASS_NAMES)
        self.assertEqual(metadata["num_classes"], str(len(shapes.CLASS_NAMES)))
        self.assertGreater(float(metadata["box_ap50"]), 0.8)
        self.assertGreater(float(metadata["mask_ap50"]), 0.8)
        tensors, _ = load_file(path)
        self.assertTrue(all(t.dtype == np.float16 for t in tensors.values()))

    def test_scene_ground_truth_names_its_labels(self):
        with open(os.path.join(DATA, "shapes_scene.json")) as f:
            truth = json.load(f)
        self.assertGreaterEqual(len(truth), 5)
        for thing in truth:
            self.assertEqual(shapes.CLASS_NAMES[thing["label"]], thing["name"])


if __name__ == "__main__":
    unittest.main()
