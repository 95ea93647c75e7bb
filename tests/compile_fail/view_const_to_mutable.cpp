// A view of const data never turns back into a view that may write: TensorView<const float>
// must not be assignable to TensorView<float> (the reverse is fine).
#include "fpn/core/tensor.hpp"

#ifdef FPN_SHOULD_FAIL
using Target = fpn::TensorView<float>;
#else
using Target = fpn::TensorView<const float>;
#endif

Target narrow(fpn::TensorView<const float> readonly) {
  Target target;
  target = readonly;
  return target;
}
