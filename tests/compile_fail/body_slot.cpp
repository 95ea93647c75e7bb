// The body slot takes a bottom-up body run stage by stage (nn::bottom_up): an FPN put there is
// refused by BackboneWithFPN's static_assert, naming what a body must provide.
// error: BackboneWithFPN: Body must model nn::bottom_up
#include "fpn/nn/backbone.hpp"

#ifdef FPN_SHOULD_FAIL
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::FPN<256>, fpn::nn::FPN<256>>;
#else
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::ResNet18, fpn::nn::FPN<256>>;
#endif
static_assert(Backbone::num_levels == 5);
