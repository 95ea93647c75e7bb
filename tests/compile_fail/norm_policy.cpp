// The FPN's norm is a policy type (nn::conv_norm: BiasOnly, FoldedBatchNorm); anything else is
// refused by FPN's static_assert, naming the concept and the policies that model it.
// error: FPN: Norm must be a norm policy
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/norm.hpp"

#ifdef FPN_SHOULD_FAIL
using Neck = fpn::nn::FPN<256, float>;
#else
using Neck = fpn::nn::FPN<256, fpn::nn::FoldedBatchNorm>;
#endif
static_assert(sizeof(Neck) > 0);
