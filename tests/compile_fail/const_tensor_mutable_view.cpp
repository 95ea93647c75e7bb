// A const Tensor lends only read-only views: nothing may write its storage through a
// TensorView<float>.
#include "fpn/core/tensor.hpp"

#ifdef FPN_SHOULD_FAIL
using Target = fpn::TensorView<float>;
#else
using Target = fpn::TensorView<const float>;
#endif

Target borrow(const fpn::Tensor<float>& tensor) { return tensor; }
