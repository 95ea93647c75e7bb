// Channel agreement between the neck and the heads is checked at compile time: an RPN of
// another width than the backbone's FPN is refused when the detector type is instantiated.
// error: the RPN's width must be the backbone's out_channels
#include "fpn/models/two_stage_detector.hpp"

#ifdef FPN_SHOULD_FAIL
using Rpn = fpn::nn::RegionProposalNetwork<128, 2>;
#else
using Rpn = fpn::nn::RegionProposalNetwork<256, 2>;
#endif
using Detector = fpn::TwoStageDetector<fpn::nn::ResNetFPNv2<50>,
                                       fpn::RoiHeads<fpn::nn::ConvFCBoxHead<256>>, Rpn>;
static_assert(sizeof(Detector) > 0);
