// torchvision's MobileNetV3-Large FPN detectors (fasterrcnn_mobilenet_v3_large_fpn and
// fasterrcnn_mobilenet_v3_large_320_fpn) as composed types: the MobileNetV3-Large body, an FPN
// over its two stride-32 stages plus "pool", five anchor sizes on every level (15 per
// location), v1's one-conv RPN head and TwoMLPHead. The box pooler keeps torchvision's default
// featmap_names "0".."3", of which this pyramid has "0" and "1" (both stride 32: every box pools
// from "0", as torchvision's level mapper clamps to k_min = k_max = 5).
//
// The two builders share every weight; they differ in their run-time defaults (faster_rcnn.py):
// both set rpn_score_thresh 0.05, and the 320 variant also min_size 320, max_size 640 and 150
// proposals before and after NMS.
#pragma once

#include <string_view>

#include "fpn/models/two_stage_detector.hpp"
#include "fpn/nn/mobilenet_v3.hpp"
#include "fpn/nn/roi_heads.hpp"
#include "fpn/nn/rpn.hpp"

namespace fpn {

struct MobileNetV3LargeFPNBuilder {
  static constexpr std::string_view name = "fasterrcnn_mobilenet_v3_large_fpn";
  static DetectorParams params() {
    DetectorParams params;
    params.rpn.score_thresh = 0.05f;
    return params;
  }
};

struct MobileNetV3Large320FPNBuilder {
  static constexpr std::string_view name = "fasterrcnn_mobilenet_v3_large_320_fpn";
  static DetectorParams params() {
    DetectorParams params;
    params.transform.min_size = 320;
    params.transform.max_size = 640;
    params.rpn.pre_nms_top_n = 150;
    params.rpn.post_nms_top_n = 150;
    params.rpn.score_thresh = 0.05f;
    return params;
  }
};

using FasterRCNNMobileNetV3LargeFPN =
    TwoStageDetector<nn::MobileNetV3LargeFPN, RoiHeads<nn::BoxHead<256>>, nn::RegionProposalNetwork<256>,
                     MobileNetV3LargeFPNBuilder>;
using FasterRCNNMobileNetV3Large320FPN =
    TwoStageDetector<nn::MobileNetV3LargeFPN, RoiHeads<nn::BoxHead<256>>, nn::RegionProposalNetwork<256>,
                     MobileNetV3Large320FPNBuilder>;

}  // namespace fpn
