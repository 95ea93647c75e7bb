// Which stages the neck takes is checked against the body: a stage 5 of a four-stage ResNet is
// refused (as are stages out of order; a last stage below the body's is taken only from a body
// that can load its first stages alone, as nn::ResNet can: the C4 baseline's Stages<3>).
// error: BackboneWithFPN: Returned must be nn::Stages<...> of increasing stage numbers
#include "fpn/nn/backbone.hpp"

#ifdef FPN_SHOULD_FAIL
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::ResNet50, fpn::nn::FPN<256>, fpn::nn::Stages<3, 4, 5>>;
#else
using Backbone = fpn::nn::BackboneWithFPN<fpn::nn::ResNet50, fpn::nn::FPN<256>, fpn::nn::Stages<2, 3, 4>>;
#endif
static_assert(Backbone::taken_channels[0] == 512);
