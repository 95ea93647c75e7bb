// The demo model's type: the Mask R-CNN that tools/train_demo.py trains on procedurally generated
// scenes of five shapes (circle, square, triangle, star, ring), bundled with fpn_detect as its
// default model (examples/data/demo_shapes_maskrcnn.safetensors).
//
// The same detector template as the COCO models, at widths a CPU trains in half an hour: a ResNet
// of BasicBlocks with base width 16 and one block per stage (C2..C5 of 16, 32, 64, 128 channels),
// a 64-channel FPN, a 256-wide two-layer box head and a 64-channel mask head. Nothing in fpn is
// hard-wired to ResNet-50's widths; another narrow network is another such alias.
#pragma once

#include "fpn/models/two_stage_detector.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/roi_heads.hpp"

namespace fpn {

using ShapesDemoBackbone = nn::BackboneWithFPN<nn::ResNet<nn::BasicBlock, 16, 1, 1, 1, 1>, nn::FPN<64>>;

}  // namespace fpn

// The demo's "arch" metadata is "maskrcnn_shapes_demo" (tools/fpn_tools/demo_model.py), so
// MaskRCNNShapesDemo::arch is that, and a file of any other arch is refused.
template <>
inline constexpr std::string_view fpn::nn::backbone_arch<fpn::ShapesDemoBackbone> = "shapes_demo";

namespace fpn {

using MaskRCNNShapesDemo =
    TwoStageDetector<ShapesDemoBackbone, RoiHeads<nn::BoxHead<64, 256>, nn::MaskHead<64, 64>>>;

}  // namespace fpn
