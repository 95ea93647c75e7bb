"""The small Mask R-CNN behind examples/data/demo_shapes_maskrcnn.safetensors.

A torchvision MaskRCNN with a narrow ResNet (BasicBlock, base width 16, one block per stage) under
a 64-channel FPN, sized to train from scratch on shapes.py's scenes in half an hour on two CPU
cores. Parameter names are torchvision's, so fpn loads the export like any converted checkpoint.
The backbone trains with ordinary BatchNorm2d; in eval mode that is the same affine map as
FrozenBatchNorm2d with eps 1e-5, so its running statistics are exported as they are.
"""
import json

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.resnet import BasicBlock, ResNet

from .safetensors_io import load_file
from .shapes import CLASS_NAMES

STAGE_WIDTHS = (16, 32, 64, 128)
FPN_CHANNELS = 64
REPRESENTATION_SIZE = 256
MASK_LAYERS = (64, 64, 64, 64)
NUM_CLASSES = len(CLASS_NAMES)
MIN_SIZE, MAX_SIZE = 320, 512
BN_EPS = 1e-5

# The metadata every export carries; train_demo.py adds the held-out scores and versions.
DEMO_METADATA = {
    "format": "fpn",
    "arch": "maskrcnn_shapes_demo",
    "frozen_bn_eps": repr(BN_EPS),
    "num_classes": str(NUM_CLASSES),
    "class_names": json.dumps(CLASS_NAMES),
    "min_size": str(MIN_SIZE),
    "max_size": str(MAX_SIZE),
    "backbone": "resnet_basic_w16_1111_fpn64",
    "source": "tools/train_demo.py",
}


class NarrowResNet(ResNet):
    """torchvision's ResNet layout (same module names) with stage widths 16/32/64/128, one
    BasicBlock per stage, and no classifier (avgpool, fc), which the detector never uses."""

    def __init__(self, widths=STAGE_WIDTHS):
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes a 64-channel stem
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # BasicBlock accepts only the default; widths come from `planes`
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], 1)
        self.layer2 = self._make_layer(BasicBlock, widths[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], 1, stride=2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x):
        raise NotImplementedError("used only as a detection backbone body")


def build_demo_model():
    """The untrained demo detector (training mode, as torch builds modules)."""
    body = NarrowResNet()
    backbone = BackboneWithFPN(body, return_layers={"layer1": "0", "layer2": "1",
                                                    "layer3": "2", "layer4": "3"},
                               in_channels_list=list(STAGE_WIDTHS), out_channels=FPN_CHANNELS)
    resolution = 7  # MaskRCNN's default box RoIAlign output size
    # num_classes stays None: torchvision refuses it next to explicit predictors, which carry it.
    return MaskRCNN(
        backbone, num_classes=None, min_size=MIN_SIZE, max_size=MAX_SIZE,
        box_head=TwoMLPHead(FPN_CHANNELS * resolution * resolution, REPRESENTATION_SIZE),
        box_predictor=FastRCNNPredictor(REPRESENTATION_SIZE, NUM_CLASSES),
        mask_head=MaskRCNNHeads(FPN_CHANNELS, MASK_LAYERS, 1),
        mask_predictor=MaskRCNNPredictor(MASK_LAYERS[-1], MASK_LAYERS[-1], NUM_CLASSES))


def export_state_dict(model, dtype=np.float16):
    """name -> numpy array as stored: torchvision's names without BatchNorm's
    num_batches_tracked counters, which nothing reads at inference."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        array = tensor.detach().float().cpu().numpy()
        if dtype == np.float16 and np.abs(array).max(initial=0) > np.finfo(np.float16).max:
            raise ValueError(f"{name} does not fit in float16")
        state[name] = np.ascontiguousarray(array.astype(dtype))
    return state


def load_demo_model(path):
    """The demo detector in eval mode with the weights of `path`; the file's metadata is kept in
    model.demo_metadata. Every exported tensor must match the architecture exactly."""
    tensors, metadata = load_file(path)
    model = build_demo_model()
    expected = model.state_dict()
    state = {}
    for name, array in tensors.items():
        if name not in expected:
            raise KeyError(f"{path}: unexpected tensor {name}")
        if tuple(array.shape) != tuple(expected[name].shape):
            raise ValueError(f"{path}: {name} has shape {list(array.shape)}, "
                             f"expected {list(expected[name].shape)}")
        state[name] = torch.from_numpy(array.astype(np.float32))
    missing = [name for name in expected
               if name not in state and not name.endswith("num_batches_tracked")]
    if missing:
        raise KeyError(f"{path}: missing tensors {', '.join(missing)}")
    for name in expected:
        if name.endswith("num_batches_tracked"):
            state[name] = expected[name]  # unused in eval mode
    model.load_state_dict(state, strict=True)
    model.eval()
    model.demo_metadata = metadata
    return model
