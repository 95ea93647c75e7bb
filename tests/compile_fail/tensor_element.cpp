// Tensor<T> takes arithmetic element types only (the tensor_element concept): a tensor of strings
// would have no safetensors dtype and no arithmetic for the ops.
#include <string>

#include "fpn/core/tensor.hpp"

#ifdef FPN_SHOULD_FAIL
using Element = std::string;
#else
using Element = float;
#endif

fpn::Tensor<Element> make_tensor() { return fpn::Tensor<Element>(fpn::Shape{2, 3}); }
