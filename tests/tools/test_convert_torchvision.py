"""Tests for tools/convert_torchvision.py.

/usr/bin/python3 -m unittest discover -s tests/tools -p 'test_*.py'   (from the project root)

Most cases call the converter's main() in-process, since starting torch costs seconds per run;
the round trip, a corrupt file and the usage errors also run it as a subprocess, as users do.
"""
import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
from torchvision.models import detection
from torchvision.models.detection import (FasterRCNN, MaskRCNN, fasterrcnn_resnet50_fpn,
                                          maskrcnn_resnet50_fpn)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONVERTER = os.path.join(PROJECT, "tools", "convert_torchvision.py")
sys.path.insert(0, os.path.join(PROJECT, "tools"))

import convert_torchvision  # noqa: E402
from fpn_tools import safetensors_io  # noqa: E402

NUM_CLASSES = 3  # small heads keep the checkpoints small


def seeded_state_dict(model, seed):
    """The model's state_dict with every float tensor redrawn from a seeded normal, so that
    FrozenBatchNorm's constant buffers (ones, zeros) are random too."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for tensor in state.values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return state


MOBILENET_ARCHS = ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"]


def build_model(arch):
    if arch.endswith("_v2") or arch in MOBILENET_ARCHS:
        # torchvision's v2 builders: BatchNorm2d throughout (num_batches_tracked to drop), a
        # two-conv RPN head, FastRCNNConvFCHead. The MobileNetV3 builders: BatchNorm2d in the
        # body (weights=None), FPN over two stride-32 stages, 15 anchors per location.
        return getattr(detection, arch)(weights=None, weights_backbone=None,
                                        num_classes=NUM_CLASSES)
    head, depth, _ = arch.split("_")
    if depth == "resnet50":
        # The public builders without pretrained weights use BatchNorm2d, so these checkpoints
        # carry num_batches_tracked buffers that the converter must drop.
        builder = maskrcnn_resnet50_fpn if head == "maskrcnn" else fasterrcnn_resnet50_fpn
        return builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    detector = MaskRCNN if head == "maskrcnn" else FasterRCNN
    return detector(resnet_fpn_backbone(backbone_name=depth, weights=None),
                    num_classes=NUM_CLASSES)


def build_state_dict(arch, seed):
    return seeded_state_dict(build_model(arch), seed)


def without_batch_counters(state):
    return {name: tensor for name, tensor in state.items()
            if not name.endswith(".num_batches_tracked")}


# The names torchvision gave these tensors before 0.13, as in its original COCO checkpoints
# fasterrcnn_resnet50_fpn_coco-258fb6c6.pth and maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth; written
# out here apart from the converter's own table, and checked against torchvision's loading.
LEGACY_RENAMES = {
    "rpn": (r"^rpn\.head\.conv\.0\.0\.", lambda match: "rpn.head.conv."),
    "mask_head": (r"^roi_heads\.mask_head\.(\d+)\.0\.",
                  lambda match: f"roi_heads.mask_head.mask_fcn{int(match[1]) + 1}."),
    "fpn": (r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.0\.",
            lambda match: f"backbone.fpn.{match[1]}.{match[2]}."),
}


def with_legacy_names(state, modules=tuple(LEGACY_RENAMES)):
    """state, in the same order, with the tensors of the given modules under their legacy names."""
    legacy = {}
    for name, tensor in state.items():
        for module in modules:
            name = re.sub(*LEGACY_RENAMES[module], name)
        legacy[name] = tensor
    return legacy


class ConvertTorchvisionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.directory_handle = tempfile.TemporaryDirectory(prefix="convert_torchvision_")
        cls.directory = cls.directory_handle.name
        cls.states = {}
        cls.checkpoints = {}
        for seed, arch in enumerate(["fasterrcnn_resnet18_fpn", "maskrcnn_resnet18_fpn",
                                     "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
                                     "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2",
                                     *MOBILENET_ARCHS]):
            cls.states[arch] = build_state_dict(arch, seed)
            cls.checkpoints[arch] = cls.path(f"{arch}.pth")
            torch.save(cls.states[arch], cls.checkpoints[arch])

    @classmethod
    def tearDownClass(cls):
        cls.directory_handle.cleanup()

    @classmethod
    def path(cls, name):
        return os.path.join(cls.directory, name)

    def run_converter(self, *args):
        """main(args) in-process, with its exit status and output as a subprocess would give."""
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                status = convert_torchvision.main(list(args))
            except SystemExit as stop:  # argparse: --help and usage errors
                status = stop.code
        return subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())

    def run_subprocess(self, *args):
        return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True,
                              timeout=120)

    def convert(self, arch, checkpoint, output, *options, run=None):
        result = (run or self.run_converter)("--arch", arch, *options, checkpoint, output)
        self.assertEqual(result.returncode, 0, result.stderr)
        return safetensors_io.load_file(output)

    def assert_fails(self, result, *fragments):
        """Exit 1 with a clean message holding every fragment, and no traceback."""
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(result.stderr.startswith("convert_torchvision: "), result.stderr)
        for fragment in fragments:
            self.assertIn(fragment, result.stderr)

    def save_checkpoint(self, name, checkpoint):
        path = self.path(name)
        torch.save(checkpoint, path)
        return path

    def assert_bit_exact(self, tensors, state):
        """tensors (as converted) hold state's float tensors as F32, in order and bit for bit."""
        expected = without_batch_counters(state)
        self.assertEqual(list(tensors), list(expected))
        for name, tensor in expected.items():
            self.assertEqual(tensors[name].dtype, np.float32, name)
            self.assertEqual(tensors[name].shape, tuple(tensor.shape), name)
            # Compare bits, so that -0.0 vs 0.0 or NaN payloads would also be caught.
            np.testing.assert_array_equal(tensors[name].view(np.uint32),
                                          tensor.numpy().view(np.uint32), err_msg=name)

    # Round trips

    def test_round_trip_is_bit_exact_for_every_arch(self):
        for arch, state in self.states.items():
            with self.subTest(arch=arch):
                output = self.path(f"{arch}.safetensors")
                tensors, metadata = self.convert(arch, self.checkpoints[arch], output,
                                                 run=self.run_subprocess)
                self.assert_bit_exact(tensors, state)
                self.assertEqual(metadata, {
                    "format": "fpn", "arch": arch, "frozen_bn_eps": "1e-05",
                    "num_classes": str(NUM_CLASSES), "source": f"{arch}.pth"})

    def test_resnet50_checkpoints_carry_batch_counters_that_are_dropped(self):
        state = self.states["maskrcnn_resnet50_fpn"]
        self.assertTrue(any(name.endswith("num_batches_tracked") for name in state))

    def test_accepts_wrapped_and_data_parallel_state_dicts(self):
        state = self.states["maskrcnn_resnet18_fpn"]
        data_parallel = {f"module.{name}": tensor for name, tensor in state.items()}
        for wrapping, checkpoint in [("model", {"model": state, "epoch": 7}),
                                     ("state_dict", {"state_dict": state}),
                                     ("module.", data_parallel)]:
            with self.subTest(wrapping=wrapping):
                path = self.save_checkpoint(f"wrapped_{wrapping}.pth", checkpoint)
                tensors, _ = self.convert("maskrcnn_resnet18_fpn", path,
                                          self.path(f"wrapped_{wrapping}.safetensors"))
                self.assertEqual(list(tensors), list(state))

    # Checkpoints saved before torchvision 0.13

    def test_legacy_names_are_those_torchvision_renames_when_loading(self):
        for arch in ["maskrcnn_resnet18_fpn", "fasterrcnn_resnet50_fpn"]:
            with self.subTest(arch=arch):
                state = self.states[arch]
                legacy = with_legacy_names(state)
                # Weight and bias of the RPN head's conv, the FPN's 8 convs and the mask head's 4.
                self.assertEqual(len(set(legacy) - set(state)),
                                 2 * (1 + 8 + (4 if arch.startswith("maskrcnn") else 0)))
                model = build_model(arch)
                model.load_state_dict(legacy)  # strict: every legacy name must be renamed
                for name, tensor in model.state_dict().items():
                    self.assertTrue(torch.equal(tensor, state[name]), name)

    def test_legacy_names_convert_bit_exactly_to_the_current_names(self):
        # The mask head, the RPN head and the FPN all renamed, as in the original COCO
        # checkpoints; the RPN alone; and the original fasterrcnn_resnet50_fpn_coco's layout,
        # converted with the eps it needs.
        for arch, modules, options in [
                ("maskrcnn_resnet18_fpn", ("rpn", "mask_head", "fpn"), ()),
                ("fasterrcnn_resnet18_fpn", ("rpn",), ()),
                ("fasterrcnn_resnet50_fpn", ("rpn", "fpn"), ("--frozen-bn-eps", "0.0"))]:
            with self.subTest(arch=arch, modules=modules):
                state = self.states[arch]
                legacy = with_legacy_names(state, modules)
                renamed = len(set(legacy) - set(state))
                self.assertGreater(renamed, 0)
                checkpoint = self.save_checkpoint(f"legacy_{arch}.pth", legacy)
                result = self.run_converter("--arch", arch, *options, checkpoint,
                                            self.path("legacy.safetensors"))
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn(f"renamed {renamed} tensors from torchvision's pre-0.13 names",
                              result.stdout)
                self.assertEqual("--frozen-bn-eps 0.0" in result.stdout, not options)
                tensors, metadata = safetensors_io.load_file(self.path("legacy.safetensors"))
                self.assert_bit_exact(tensors, state)
                self.assertEqual(metadata["arch"], arch)
                self.assertEqual(metadata["num_classes"], str(NUM_CLASSES))
                self.assertEqual(metadata["frozen_bn_eps"], "0.0" if options else "1e-05")

    def test_a_tensor_under_both_names_is_refused_naming_both(self):
        state = with_legacy_names(self.states["maskrcnn_resnet18_fpn"], ("mask_head",))
        state["roi_heads.mask_head.0.0.weight"] = state["roi_heads.mask_head.mask_fcn1.weight"]
        state["rpn.head.conv.bias"] = state["rpn.head.conv.0.0.bias"]
        state["roi_heads.mask_head.mask_fcn4.bias"] = torch.zeros(255)
        checkpoint = self.save_checkpoint("both_names.pth", state)
        output = self.path("both_names.safetensors")
        result = self.run_converter("--arch", "maskrcnn_resnet18_fpn", checkpoint, output)
        self.assert_fails(
            result, "3 problems:",
            'duplicate: "roi_heads.mask_head.mask_fcn1.weight" is the legacy name of '
            '"roi_heads.mask_head.0.0.weight", and the checkpoint holds both',
            'duplicate: "rpn.head.conv.bias" is the legacy name of "rpn.head.conv.0.0.bias"',
            'wrong shape: "roi_heads.mask_head.3.0.bias" (stored as '
            '"roi_heads.mask_head.mask_fcn4.bias") expected [256], got [255]')
        self.assertFalse(os.path.exists(output))

    def test_help_says_legacy_names_are_accepted(self):
        result = self.run_converter("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("legacy names:", result.stdout)
        self.assertIn("rpn.head.conv.P                  -> rpn.head.conv.0.0.P", result.stdout)
        self.assertIn("roi_heads.mask_head.mask_fcnI.P  -> roi_heads.mask_head.(I-1).0.P",
                      result.stdout)
        self.assertIn("backbone.fpn.inner_blocks.I.P    -> backbone.fpn.inner_blocks.I.0.P",
                      result.stdout)

    def test_frozen_bn_eps_is_stored_in_metadata(self):
        for option, text in [("0", "0.0"), ("1e-3", "0.001")]:
            with self.subTest(eps=option):
                _, metadata = self.convert("fasterrcnn_resnet18_fpn",
                                           self.checkpoints["fasterrcnn_resnet18_fpn"],
                                           self.path("eps.safetensors"), "--frozen-bn-eps", option)
                self.assertEqual(metadata["frozen_bn_eps"], text)

    def test_frozen_bn_eps_must_be_a_non_negative_number(self):
        for option in ["-1e-5", "abc", "nan", "inf"]:
            with self.subTest(eps=option):
                result = self.run_converter("--arch", "fasterrcnn_resnet18_fpn", "--frozen-bn-eps",
                                            option, self.checkpoints["fasterrcnn_resnet18_fpn"],
                                            self.path("eps.safetensors"))
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("--frozen-bn-eps", result.stderr)

    def test_help_explains_the_coco_checkpoints_eps(self):
        result = self.run_subprocess("--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("overwrite_eps", result.stdout)
        self.assertIn("--frozen-bn-eps 0.0", result.stdout)

    def test_fp16_stores_half_precision(self):
        state = self.states["fasterrcnn_resnet18_fpn"]
        tensors, _ = self.convert("fasterrcnn_resnet18_fpn",
                                  self.checkpoints["fasterrcnn_resnet18_fpn"],
                                  self.path("half.safetensors"), "--fp16")
        for name, tensor in state.items():
            self.assertEqual(tensors[name].dtype, np.float16, name)
            np.testing.assert_array_equal(tensors[name], tensor.half().numpy(), err_msg=name)

    # Checkpoints that do not fit

    def test_wrong_arch_names_keys_with_expected_and_got_shapes(self):
        result = self.run_converter("--arch", "fasterrcnn_resnet50_fpn",
                                    self.checkpoints["fasterrcnn_resnet18_fpn"],
                                    self.path("wrong_arch.safetensors"))
        self.assert_fails(
            result, "does not fit --arch fasterrcnn_resnet50_fpn",
            'wrong shape: "backbone.body.layer1.0.conv1.weight" expected [64, 64, 1, 1], '
            "got [64, 64, 3, 3]",
            'missing: "backbone.body.layer1.0.conv3.weight" expected [256, 64, 1, 1]',
            "the checkpoint looks like --arch fasterrcnn_resnet18_fpn")
        self.assertFalse(os.path.exists(self.path("wrong_arch.safetensors")))

    def test_v1_and_v2_checkpoints_are_told_apart(self):
        for given, checkpoint_arch in [("maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"),
                                       ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2")]:
            with self.subTest(given=given):
                output = self.path(f"v1_v2_{given}.safetensors")
                result = self.run_converter("--arch", given, self.checkpoints[checkpoint_arch],
                                            output)
                self.assert_fails(result, f"does not fit --arch {given}",
                                  f"the checkpoint looks like --arch {checkpoint_arch}")
                self.assertFalse(os.path.exists(output))

    def test_v2_output_is_what_fpn_reads(self):
        # Every BatchNorm2d of the v2 heads and FPN is kept (fpn folds them at load), and no
        # num_batches_tracked: fpn's strict load reads every tensor of the file.
        tensors, metadata = self.convert("maskrcnn_resnet50_fpn_v2",
                                         self.checkpoints["maskrcnn_resnet50_fpn_v2"],
                                         self.path("v2_names.safetensors"))
        self.assertEqual(metadata["arch"], "maskrcnn_resnet50_fpn_v2")
        self.assertFalse([name for name in tensors if name.endswith("num_batches_tracked")])
        for name in ["backbone.fpn.inner_blocks.0.1.running_var", "rpn.head.conv.1.0.bias",
                     "roi_heads.box_head.3.1.running_mean", "roi_heads.box_head.5.weight",
                     "roi_heads.mask_head.3.1.weight"]:
            self.assertIn(name, tensors)
        self.assertEqual(tensors["roi_heads.box_head.5.weight"].shape, (1024, 256 * 7 * 7))

    # MobileNetV3-Large FPN

    def test_mobilenet_output_keeps_batch_norm_and_drops_counters(self):
        for arch in MOBILENET_ARCHS:
            with self.subTest(arch=arch):
                state = self.states[arch]
                self.assertTrue(any(name.endswith("num_batches_tracked") for name in state))
                tensors, metadata = self.convert(arch, self.checkpoints[arch],
                                                 self.path(f"{arch}_names.safetensors"))
                self.assertEqual(metadata["arch"], arch)
                self.assertEqual(metadata["frozen_bn_eps"], "1e-05")
                self.assertFalse([name for name in tensors
                                  if name.endswith("num_batches_tracked")])
                # The stem's BatchNorm, a squeeze-excitation block, the last 1x1 conv's
                # BatchNorm, the FPN over the two stride-32 stages (160 and 960 channels), and
                # 15 anchors per location in the RPN head.
                for name, shape in [("backbone.body.0.1.running_var", (16,)),
                                    ("backbone.body.4.block.2.fc1.weight", (24, 72, 1, 1)),
                                    ("backbone.body.16.1.weight", (960,)),
                                    ("backbone.fpn.inner_blocks.0.0.weight", (256, 160, 1, 1)),
                                    ("backbone.fpn.inner_blocks.1.0.weight", (256, 960, 1, 1)),
                                    ("rpn.head.cls_logits.weight", (15, 256, 1, 1)),
                                    ("rpn.head.bbox_pred.weight", (60, 256, 1, 1))]:
                    self.assertEqual(tensors[name].shape, shape, name)
                self.assertNotIn("backbone.fpn.inner_blocks.2.0.weight", tensors)

    def test_mobilenet_refuses_frozen_bn_eps_zero(self):
        for arch in MOBILENET_ARCHS:
            with self.subTest(arch=arch):
                output = self.path("mobilenet_eps.safetensors")
                result = self.run_converter("--arch", arch, "--frozen-bn-eps", "0.0",
                                            self.checkpoints[arch], output)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("--frozen-bn-eps 0.0 is for torchvision's ResNet-50 v1 COCO "
                              "checkpoints only", result.stderr)
                self.assertIn(f"{arch} checkpoints, COCO ones included, use eps 1e-5",
                              result.stderr)
                self.assertFalse(os.path.exists(output))
        # An explicit 1e-5 is what they need, and fine.
        _, metadata = self.convert(MOBILENET_ARCHS[0], self.checkpoints[MOBILENET_ARCHS[0]],
                                   self.path("mobilenet_eps.safetensors"),
                                   "--frozen-bn-eps", "1e-5")
        self.assertEqual(metadata["frozen_bn_eps"], "1e-05")

    def test_help_says_eps_zero_is_for_resnet50_v1_only(self):
        result = self.run_converter("--help")
        self.assertEqual(result.returncode, 0)
        text = " ".join(result.stdout.split())
        self.assertIn("0.0 is for those ResNet-50 v1 COCO checkpoints only", text)
        self.assertIn("--frozen-bn-eps 0.0 with those archs is refused", text)
        for arch in MOBILENET_ARCHS:
            self.assertIn(arch, result.stdout)

    def test_mobilenet_legacy_names_convert_without_the_eps_note(self):
        # torchvision's MobileNetV3 COCO checkpoints (0.10) predate 0.13: the RPN head's conv and
        # the FPN's convs have their legacy names, which torchvision renames when loading.
        arch = "fasterrcnn_mobilenet_v3_large_fpn"
        state = self.states[arch]
        legacy = with_legacy_names(state, ("rpn", "fpn"))
        renamed = len(set(legacy) - set(state))
        self.assertEqual(renamed, 2 * (1 + 4))  # the RPN head's conv, the FPN's 2 + 2 convs
        build_model(arch).load_state_dict(legacy)  # strict: every legacy name is renamed
        checkpoint = self.save_checkpoint("legacy_mobilenet.pth", legacy)
        result = self.run_converter("--arch", arch, checkpoint,
                                    self.path("legacy_mobilenet.safetensors"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"renamed {renamed} tensors from torchvision's pre-0.13 names", result.stdout)
        self.assertNotIn("--frozen-bn-eps 0.0", result.stdout)
        tensors, metadata = safetensors_io.load_file(self.path("legacy_mobilenet.safetensors"))
        self.assert_bit_exact(tensors, state)
        self.assertEqual(metadata["frozen_bn_eps"], "1e-05")

    def test_mobilenet_and_resnet_checkpoints_are_told_apart(self):
        result = self.run_converter("--arch", "fasterrcnn_resnet18_fpn",
                                    self.checkpoints["fasterrcnn_mobilenet_v3_large_fpn"],
                                    self.path("mobilenet_as_resnet.safetensors"))
        self.assert_fails(result, "does not fit --arch fasterrcnn_resnet18_fpn",
                          "the checkpoint looks like --arch fasterrcnn_mobilenet_v3_large_fpn or "
                          "fasterrcnn_mobilenet_v3_large_320_fpn")
        result = self.run_converter("--arch", "fasterrcnn_mobilenet_v3_large_320_fpn",
                                    self.checkpoints["fasterrcnn_resnet18_fpn"],
                                    self.path("resnet_as_mobilenet.safetensors"))
        self.assert_fails(result, "does not fit --arch fasterrcnn_mobilenet_v3_large_320_fpn",
                          'missing: "backbone.body.16.0.weight" expected [960, 160, 1, 1]',
                          "the checkpoint looks like --arch fasterrcnn_resnet18_fpn")

    def test_faster_rcnn_checkpoint_for_mask_rcnn_lists_the_missing_mask_head(self):
        result = self.run_converter("--arch", "maskrcnn_resnet18_fpn",
                                    self.checkpoints["fasterrcnn_resnet18_fpn"],
                                    self.path("no_mask.safetensors"))
        self.assert_fails(result, "12 problems:",
                          'missing: "roi_heads.mask_predictor.mask_fcn_logits.weight" expected '
                          f"[{NUM_CLASSES}, 256, 1, 1]",
                          "the checkpoint looks like --arch fasterrcnn_resnet18_fpn")

    def test_missing_unexpected_and_misshapen_keys_are_all_reported(self):
        state = dict(self.states["fasterrcnn_resnet18_fpn"])
        del state["roi_heads.box_head.fc6.bias"]
        state["roi_heads.extra.weight"] = torch.zeros(2, 3)
        state["rpn.head.conv.0.0.bias"] = torch.zeros(255)
        checkpoint = self.save_checkpoint("damaged.pth", state)
        result = self.run_converter("--arch", "fasterrcnn_resnet18_fpn", checkpoint,
                                    self.path("damaged.safetensors"))
        self.assert_fails(result, "3 problems:",
                          'missing: "roi_heads.box_head.fc6.bias" expected [1024]',
                          'unexpected: "roi_heads.extra.weight" [2, 3]',
                          'wrong shape: "rpn.head.conv.0.0.bias" expected [256], got [255]')

    def test_integer_and_non_finite_weights_are_refused(self):
        state = dict(self.states["fasterrcnn_resnet18_fpn"])
        state["rpn.head.conv.0.0.bias"] = torch.zeros(256, dtype=torch.int64)
        state["rpn.head.cls_logits.bias"] = torch.full((3,), float("nan"))
        checkpoint = self.save_checkpoint("bad_values.pth", state)
        result = self.run_converter("--arch", "fasterrcnn_resnet18_fpn", checkpoint,
                                    self.path("bad_values.safetensors"))
        self.assert_fails(result,
                          'wrong dtype: "rpn.head.conv.0.0.bias" expected a floating-point '
                          "tensor, got torch.int64",
                          'not finite: "rpn.head.cls_logits.bias"')

    # Files that are not checkpoints

    def test_corrupt_file_exits_1_without_a_traceback(self):
        garbage = self.path("corrupt.pth")
        with open(garbage, "wb") as out:
            out.write(b"PK\x03\x04 a zip header and nothing after it")
        result = self.run_subprocess("--arch", "maskrcnn_resnet18_fpn", garbage,
                                     self.path("corrupt.safetensors"))
        self.assert_fails(result, f"cannot read '{garbage}': not a PyTorch checkpoint")

    def test_unreadable_inputs_give_a_clean_message(self):
        garbage = self.path("garbage.pth")
        with open(garbage, "wb") as out:
            out.write(b"\x80\x02this is not a pickle at all" * 10)
        empty = self.path("empty.pth")
        open(empty, "wb").close()
        cases = [
            (garbage, f"cannot read '{garbage}': not a PyTorch checkpoint"),
            (empty, f"cannot read '{empty}': the file is empty or truncated"),
            (self.path("absent.pth"), "no such file"),
            (self.directory, "not a regular file"),
            (self.save_checkpoint("list.pth", [torch.zeros(1)]),
             "is not a state_dict: expected a non-empty dict of tensors"),
            (self.save_checkpoint("empty_dict.pth", {}), "got an empty dict"),
            (self.save_checkpoint("not_tensors.pth", {"a": torch.zeros(1), "b": 3}),
             '"b" is a value of type int'),
        ]
        for path, message in cases:
            with self.subTest(path=os.path.basename(path)):
                result = self.run_converter("--arch", "maskrcnn_resnet18_fpn", path,
                                            self.path("unreadable.safetensors"))
                self.assert_fails(result, message)

    def test_pickled_python_objects_need_trust_pickle(self):
        # torchvision's reference train.py saves the argparse namespace beside the model.
        checkpoint = self.save_checkpoint("reference.pth", {
            "model": self.states["fasterrcnn_resnet18_fpn"], "args": argparse.Namespace(lr=0.02)})
        output = self.path("reference.safetensors")
        refused = self.run_converter("--arch", "fasterrcnn_resnet18_fpn", checkpoint, output)
        self.assert_fails(refused, "argparse.Namespace", "--trust-pickle")
        self.convert("fasterrcnn_resnet18_fpn", checkpoint, output, "--trust-pickle")

    def test_trust_pickle_accepts_a_whole_saved_model(self):
        model = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None),
                           num_classes=NUM_CLASSES)
        checkpoint = self.save_checkpoint("whole_model.pth", model)
        output = self.path("whole_model.safetensors")
        refused = self.run_converter("--arch", "fasterrcnn_resnet18_fpn", checkpoint, output)
        self.assert_fails(refused, "Unsupported class", "--trust-pickle")
        tensors, _ = self.convert("fasterrcnn_resnet18_fpn", checkpoint, output, "--trust-pickle")
        self.assertEqual(list(tensors), list(model.state_dict()))

    def test_usage_errors_exit_2(self):
        checkpoint = self.checkpoints["fasterrcnn_resnet18_fpn"]
        for args in [["--arch", "retinanet_resnet50_fpn", checkpoint, self.path("x")],
                     [checkpoint, self.path("x")],
                     ["--arch", "fasterrcnn_resnet18_fpn", checkpoint]]:
            with self.subTest(args=args):
                result = self.run_subprocess(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("usage:", result.stderr)

    # Output safety

    def test_failure_leaves_an_existing_output_unchanged_and_no_temporary_files(self):
        output_directory = tempfile.mkdtemp(dir=self.directory)
        output = os.path.join(output_directory, "keep.safetensors")
        with open(output, "wb") as out:
            out.write(b"previous contents")
        result = self.run_converter("--arch", "maskrcnn_resnet50_fpn",
                                    self.checkpoints["maskrcnn_resnet18_fpn"], output)
        self.assert_fails(result)
        with open(output, "rb") as kept:
            self.assertEqual(kept.read(), b"previous contents")
        self.assertEqual(os.listdir(output_directory), ["keep.safetensors"])

    def test_missing_output_directory_is_reported(self):
        output = self.path("no/such/dir/out.safetensors")
        result = self.run_converter("--arch", "fasterrcnn_resnet18_fpn",
                                    self.checkpoints["fasterrcnn_resnet18_fpn"], output)
        self.assert_fails(result, f"cannot write '{output}': directory")


if __name__ == "__main__":
    unittest.main()
