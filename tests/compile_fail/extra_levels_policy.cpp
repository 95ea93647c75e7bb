// The FPN's extra-level slot takes a policy (nn::extra_levels): a norm policy put there is
// refused by FPN's static_assert.
// error: FPN: Extra must be an extra-level policy
#include "fpn/nn/fpn.hpp"

#ifdef FPN_SHOULD_FAIL
using Neck = fpn::nn::FPN<256, fpn::nn::BiasOnly, fpn::nn::FoldedBatchNorm>;
#else
using Neck = fpn::nn::FPN<256, fpn::nn::BiasOnly, fpn::nn::LastLevelP6P7<fpn::nn::FromC5>>;
#endif
static_assert(Neck::extra_reads_stage && Neck::extra_level_count == 2);
[[maybe_unused]] constexpr std::int64_t width = Neck::out_channels;
