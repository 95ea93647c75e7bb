// A WeightReader borrows its SafeTensors: built from a temporary, it would read a destroyed file
// at its first load (stack-use-after-scope), so the constructor from an rvalue is deleted.
#include "fpn/io/safetensors.hpp"
#include "fpn/nn/weights.hpp"

fpn::io::SafeTensors open_weights();

fpn::Tensor<float> first_conv() {
#ifdef FPN_SHOULD_FAIL
  const fpn::nn::WeightReader reader(open_weights());
#else
  const fpn::io::SafeTensors file = open_weights();
  const fpn::nn::WeightReader reader(file);
#endif
  return reader.load("backbone.body.conv1.weight", fpn::Shape{64, 3, 7, 7});
}
