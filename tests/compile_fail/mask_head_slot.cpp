// The ROI heads' mask slot takes a mask head (nn::mask_head) or NoMaskHead: a box head put
// there is refused by RoiHeads' static_assert.
// error: RoiHeads: the mask head must be NoMaskHead or model nn::mask_head
#include "fpn/models/two_stage_detector.hpp"

#ifdef FPN_SHOULD_FAIL
using Heads = fpn::RoiHeads<fpn::nn::BoxHead<256>, fpn::nn::BoxHead<256>>;
#else
using Heads = fpn::RoiHeads<fpn::nn::BoxHead<256>, fpn::nn::MaskHead<256>>;
#endif
static_assert(Heads::has_mask);
