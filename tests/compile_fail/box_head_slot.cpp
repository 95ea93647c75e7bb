// The ROI heads' box slot takes a box head (nn::box_head): a mask head put there is refused by
// RoiHeads' static_assert, naming what a box head must provide.
// error: RoiHeads: the box head must model nn::box_head
#include "fpn/models/two_stage_detector.hpp"

#ifdef FPN_SHOULD_FAIL
using Heads = fpn::RoiHeads<fpn::nn::MaskHead<256>>;
#else
using Heads = fpn::RoiHeads<fpn::nn::BoxHead<256>, fpn::nn::MaskHead<256>>;
#endif
static_assert(Heads::box_head::pool_size == 7);
