// The heads' widths must be the neck's: a mask head for 128-channel features on a 256-channel
// FPN is refused at compile time.
// error: TwoStageDetector: the mask head's in_channels must be the backbone's out_channels
#include "fpn/models/two_stage_detector.hpp"

#ifdef FPN_SHOULD_FAIL
using Detector = fpn::TwoStageDetector<fpn::nn::ResNetFPN<18>,
                                       fpn::RoiHeads<fpn::nn::BoxHead<256>, fpn::nn::MaskHead<128>>>;
#else
using Detector = fpn::TwoStageDetector<fpn::nn::ResNetFPN<18>,
                                       fpn::RoiHeads<fpn::nn::BoxHead<256>, fpn::nn::MaskHead<256>>>;
#endif
static_assert(Detector::has_mask);
