#!/usr/bin/python3
"""Makes the interim demo's inputs: a seeded, BatchNorm-calibrated Mask R-CNN R18-FPN checkpoint
(DIR/demo_maskrcnn_resnet18_fpn.safetensors) and a synthetic scene (DIR/demo_scene.png).

The weights are random, so the detections show the pipeline working end to end, not objects
recognised; a trained demo model replaces them when it exists.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fpn_tools import models  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    arch = "maskrcnn_resnet18_fpn"
    weights = os.path.join(args.out, f"demo_{arch}.safetensors")
    if not os.path.exists(weights):
        models.save_seeded_detector(arch, weights, seed=2024, classifier_scale=3.0)
    image = os.path.join(args.out, "demo_scene.png")
    if not os.path.exists(image):
        Image.fromarray(np.ascontiguousarray(models.synthetic_image(427, 640, seed=5))).save(image)
    print(weights)
    print(image)


if __name__ == "__main__":
    main()
