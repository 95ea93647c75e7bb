#include "fpn/io/safetensors.hpp"

#include <gtest/gtest.h>

namespace fpn::io {
namespace {

std::vector<unsigned char> as_bytes(const std::string& text) {
  return {text.begin(), text.end()};
}

TEST(SafeTensors, RoundTripsFloatTensorsAndMetadata) {
  Tensor<float> weight(Shape{2, 3});
  for (int i = 0; i < 6; ++i) weight.data()[i] = 0.5f * static_cast<float>(i) - 1.0f;
  Tensor<float> bias(Shape{2}, 4.0f);
  const std::string bytes = to_safetensors_bytes({{"w", weight.view()}, {"b", bias.view()}},
                                                 {{"arch", "resnet50_fpn"}});
  const SafeTensors file = SafeTensors::parse(as_bytes(bytes), "memory");
  EXPECT_EQ(file.metadata().at("arch"), "resnet50_fpn");
  ASSERT_EQ(file.tensors().size(), 2u);
  const Tensor<float> loaded = file.load_float("w", Shape{2, 3});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(loaded.data()[i], weight.data()[i]);
  EXPECT_EQ(file.load_float("b").at(1), 4.0f);
}

TEST(SafeTensors, ShapeMismatchNamesTensorAndBothShapes) {
  Tensor<float> weight(Shape{128, 64, 1, 1});
  const std::string bytes = to_safetensors_bytes({{"backbone.layer2.0.conv1.weight", weight}});
  const SafeTensors file = SafeTensors::parse(as_bytes(bytes), "w.safetensors");
  try {
    (void)file.load_float("backbone.layer2.0.conv1.weight", Shape{128, 256, 1, 1});
    FAIL() << "expected WeightError";
  } catch (const WeightError& error) {
    EXPECT_STREQ(error.what(),
                 "safetensors: 'w.safetensors': \"backbone.layer2.0.conv1.weight\" expected "
                 "[128, 256, 1, 1], got [128, 64, 1, 1]");
  }
}

TEST(SafeTensors, ConvertsHalfAndBfloat16) {
  // F16 1.0 = 0x3C00, -2.0 = 0xC000, smallest subnormal 0x0001 = 2^-24; BF16 1.0 = 0x3F80.
  std::string header =
      R"({"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[6,8]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header;
  const unsigned char data[] = {0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0x80, 0x3F};
  bytes.append(reinterpret_cast<const char*>(data), sizeof data);
  const SafeTensors file = SafeTensors::parse(as_bytes(bytes), "memory");
  const Tensor<float> half = file.load_float("h");
  EXPECT_EQ(half.at(0), 1.0f);
  EXPECT_EQ(half.at(1), -2.0f);
  EXPECT_EQ(half.at(2), std::ldexp(1.0f, -24));
  EXPECT_EQ(file.load_float("b").at(0), 1.0f);
}

}  // namespace
}  // namespace fpn::io
