// The detector's backbone slot takes a backbone with its neck (fpn::backbone_with_fpn): a bare
// ResNet is refused by TwoStageDetector's static_assert.
// error: TwoStageDetector: Backbone must model fpn::backbone_with_fpn
#include "fpn/models/two_stage_detector.hpp"

struct Bare {
  static constexpr std::int64_t out_channels = 256;
};
#ifdef FPN_SHOULD_FAIL
using Detector = fpn::TwoStageDetector<Bare, fpn::RoiHeads<fpn::nn::BoxHead<256>>>;
#else
using Detector = fpn::TwoStageDetector<fpn::nn::ResNetFPN<18>, fpn::RoiHeads<fpn::nn::BoxHead<256>>>;
#endif
static_assert(!Detector::has_mask);
