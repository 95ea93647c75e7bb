#!/usr/bin/python3
"""End-to-end test of the example program fpn_segments, run as built, against the PyTorch
reference of the seed's segment-proposal network (tools/fixtures/seed.py, case "landscape":
the scene, its proposals' scores and boxes and their first 100 masks pasted by
paste_segment_masks, all in original-image pixels).

  /usr/bin/python3 tests/app/test_segments_cli.py --segments BUILD/examples/fpn_segments \
      --fixtures BUILD/fixtures [unittest arguments]

The COCO RLE strings are decoded by test_cli.py's reading of pycocotools' maskApi.c, independent
of the C++ encoder.
"""
import argparse
import json
import os
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from fpn_tools.safetensors_io import load_file  # noqa: E402
from test_cli import box_iou, mask_iou, rle_decode, run  # noqa: E402

PATHS = argparse.Namespace()  # set in __main__: segments, fixtures
ROOT = os.path.join(HERE, "..", "..")
MODEL = os.path.join(ROOT, "examples", "data", "seed", "segments.safetensors")
RPN_MODEL = os.path.join(ROOT, "examples", "data", "seed", "fpn.safetensors")
TOP = 40


class SegmentsCliTest(unittest.TestCase):
    def setUp(self):
        self._directory = tempfile.TemporaryDirectory(prefix="fpn_segments_")
        self.directory = self._directory.name
        self.reference, _ = load_file(os.path.join(PATHS.fixtures, "seed_segments_landscape.safetensors"))
        rgb = self.reference["image"].astype(np.uint8)
        self.image = os.path.join(self.directory, "scene.png")
        Image.fromarray(rgb).save(self.image)

    def tearDown(self):
        self._directory.cleanup()

    def path(self, name):
        return os.path.join(self.directory, name)

    def assert_exit(self, result, code):
        self.assertEqual(result.returncode, code, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")

    def test_segments_match_the_reference_as_coco_rle(self):
        out = self.path("segments.json")
        result = run(PATHS.segments, "--model", MODEL, "--image", self.image, "--out", out,
                     "--top", TOP)
        self.assert_exit(result, 0)
        with open(out) as f:
            written = json.load(f)
        height, width = self.reference["image"].shape[:2]
        self.assertEqual((written["height"], written["width"]), (height, width))
        segments = written["segments"]
        self.assertEqual(len(segments), TOP)
        scores = self.reference["scores"]
        boxes = self.reference["boxes"]
        masks = self.reference["masks"] > 0.5
        for i, segment in enumerate(segments):
            with self.subTest(segment=i):
                # The proposals are the reference's, in its order (the C++ test checks all 1000
                # with the near-tie rules; the first 40 of this scene have no near-tie).
                self.assertAlmostEqual(segment["score"], float(scores[i]), delta=1e-5)
                x, y, w, h = segment["bbox"]
                self.assertGreater(box_iou([x, y, x + w, y + h], boxes[i].tolist()), 0.999)
                self.assertEqual(segment["segmentation"]["size"], [height, width])
                mask = rle_decode(segment["segmentation"])
                self.assertGreater(mask.sum(), 0)
                self.assertGreaterEqual(mask_iou(mask, masks[i]), 0.98)
        self.assertEqual([s["score"] for s in segments],
                         sorted((s["score"] for s in segments), reverse=True))

    def test_an_rpn_model_is_refused_and_nothing_is_written(self):
        out = self.path("segments.json")
        result = run(PATHS.segments, "--model", RPN_MODEL, "--image", self.image, "--out", out)
        self.assert_exit(result, 1)
        self.assertIn("is for seed_fpn (its \"arch\" metadata), not seed_segments", result.stderr)
        self.assertFalse(os.path.exists(out))

    def test_bad_input_and_usage(self):
        out = self.path("segments.json")
        missing = self.path("missing.png")
        result = run(PATHS.segments, "--model", MODEL, "--image", missing, "--out", out)
        self.assert_exit(result, 1)
        self.assertIn(missing, result.stderr)
        broken = self.path("broken.png")
        with open(broken, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nnot a png")
        result = run(PATHS.segments, "--model", MODEL, "--image", broken, "--out", out)
        self.assert_exit(result, 1)
        self.assertFalse(os.path.exists(out))
        result = run(PATHS.segments, "--model", MODEL, "--image", self.image, "--out", out,
                     "--top", 0)
        self.assert_exit(result, 2)
        result = run(PATHS.segments, "--model", MODEL, "--image", self.image, "--out",
                     self.path("no/such/dir/out.json"))
        self.assert_exit(result, 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", required=True, help="the built fpn_segments")
    parser.add_argument("--fixtures", required=True, help="FPN_FIXTURE_DIR")
    PATHS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)
