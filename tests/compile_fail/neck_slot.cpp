// The neck slot takes a top-down neck (nn::top_down): a ResNet put there is refused by
// BackboneWithFPN's static_assert, naming what a neck must provide.
// error: BackboneWithFPN: Neck must model nn::top_down
#include "fpn/nn/backbone.hpp"

#ifdef FPN_SHOULD_FAIL
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::ResNet18, fpn::nn::ResNet18>;
#else
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::ResNet18, fpn::nn::FPN<256>>;
#endif
static_assert(Backbone::out_channels == 256);
