// A user's program: builds a tensor, writes it to safetensors bytes in memory, reads it back.
// Exits 0 only if the shape, every value and the metadata survive the round trip.
#include <cstdint>
#include <cstdio>
#include <fpn/fpn.hpp>
#include <string>
#include <vector>

int main() {
  fpn::Tensor<float> weight(fpn::Shape{2, 3, 4});
  for (std::int64_t i = 0; i < weight.numel(); ++i) {
    weight.data()[i] = 0.25f * static_cast<float>(i) - 1.5f;
  }

  const std::string bytes =
      fpn::io::to_safetensors_bytes({{"weight", weight.view()}}, {{"producer", "fpn_consumer"}});
  const fpn::io::SafeTensors file =
      fpn::io::SafeTensors::parse(std::vector<unsigned char>(bytes.begin(), bytes.end()), "memory");
  const fpn::Tensor<float> loaded = file.load_float("weight", weight.shape());

  int mismatches = 0;
  for (std::int64_t i = 0; i < weight.numel(); ++i) {
    if (loaded.data()[i] != weight.data()[i]) ++mismatches;
  }
  const bool metadata_ok =
      file.metadata().count("producer") == 1 && file.metadata().at("producer") == "fpn_consumer";

  std::printf("fpn_consumer: %zu bytes, tensor %s, %d mismatches, metadata %s\n", bytes.size(),
              loaded.shape().str().c_str(), mismatches, metadata_ok ? "ok" : "lost");
  return mismatches == 0 && metadata_ok ? 0 : 1;
}
