// Fuzz target for fpn::io::SafeTensors: arbitrary bytes are parsed, and every tensor the file lists
// is looked up and loaded. fpn::Error is the expected way to refuse; a crash, any other exception,
// a sanitizer report, a broken invariant below, or memory beyond a small multiple of the input is a
// finding. Built by tests/fuzz/fuzz.cmake: with libFuzzer under Clang, and as a corpus replay
// (standalone_driver.cpp) under other compilers.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fpn/io/safetensors.hpp"

// Feature tests only a macro can make: the memory budget needs AddressSanitizer's allocator hooks.
#if defined(__SANITIZE_ADDRESS__)
#define FPN_FUZZ_HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FPN_FUZZ_HAS_ASAN 1
#endif
#endif

#ifdef FPN_FUZZ_HAS_ASAN
// From <sanitizer/allocator_interface.h>, which GCC does not install; libasan exports both.
extern "C" int __sanitizer_install_malloc_and_free_hooks(
    void (*malloc_hook)(const volatile void* pointer, std::size_t size),
    void (*free_hook)(const volatile void* pointer));
extern "C" std::size_t __sanitizer_get_allocated_size(const volatile void* pointer);
#endif

namespace {

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what.c_str());
  std::abort();
}

void check(bool condition, const std::string& what) {
  if (!condition) finding(what);
}

// Peak heap bytes live while metering, from AddressSanitizer's allocation hooks (0 without it).
// A header may be 100 MB, so reading one must not take many times the file: the budget is well
// above the ~10x that a header of nothing but tiny metadata entries legitimately costs as a
// std::map, and well below the ~75x a JSON document tree cost before the header was streamed.
constexpr std::int64_t budget_per_input_byte = 24;
constexpr std::int64_t budget_fixed_bytes = 64 * 1024;

std::atomic<bool> metering{false};
std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_bytes{0};

#ifdef FPN_FUZZ_HAS_ASAN
void on_malloc(const volatile void*, std::size_t size) {
  if (!metering) return;
  const std::int64_t live = live_bytes += static_cast<std::int64_t>(size);
  if (live > peak_bytes) peak_bytes = live;
}
void on_free(const volatile void* pointer) {
  if (metering && pointer != nullptr) {
    live_bytes -= static_cast<std::int64_t>(__sanitizer_get_allocated_size(pointer));
  }
}
const bool hooks_installed = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0;
#else
const bool hooks_installed = false;
#endif

void start_metering() {
  live_bytes = 0;
  peak_bytes = 0;
  metering = hooks_installed;
}
std::int64_t stop_metering() {
  metering = false;
  return peak_bytes;
}

bool is_float(fpn::io::DType dtype) {
  using fpn::io::DType;
  return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16 || dtype == DType::f64;
}

bool same_bits(const fpn::Tensor<float>& a, const fpn::Tensor<float>& b) {
  return a.shape() == b.shape() &&
         (a.numel() == 0 || std::memcmp(a.data(), b.data(),
                                        static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0);
}

// Everything a user can ask of a parsed file, with the invariants its checks promise.
void exercise(const fpn::io::SafeTensors& file, std::uint64_t data_size,
              std::map<std::string, fpn::Tensor<float>>& loaded) {
  for (const fpn::io::TensorInfo& tensor : file.tensors()) {
    const fpn::io::TensorInfo& found = file.info(tensor.name);
    check(&found == &tensor, "info(\"" + tensor.name + "\") finds another entry");
    check(file.contains(tensor.name), "contains(\"" + tensor.name + "\") is false");
    const auto size = static_cast<std::uint64_t>(fpn::io::dtype_info(tensor.dtype).size);
    check(tensor.begin <= tensor.end && tensor.end <= data_size &&
              tensor.end - tensor.begin == static_cast<std::uint64_t>(tensor.shape.numel()) * size,
          "\"" + tensor.name + "\" was accepted with a range that does not fit its shape");
    try {
      fpn::Tensor<float> values = file.load_float(tensor.name);
      check(is_float(tensor.dtype), "load_float accepted a non-float dtype");
      check(values.shape() == tensor.shape, "load_float changed the shape");
      check(same_bits(values, file.load_float(tensor.name, tensor.shape)),
            "load_float with the expected shape gave other values");
      loaded.emplace(tensor.name, std::move(values));
    } catch (const fpn::Error&) {
      check(!is_float(tensor.dtype), "load_float refused a float tensor: " + tensor.name);
    }
  }
  try {
    (void)file.info("\x01 not a tensor name");
    check(file.contains("\x01 not a tensor name"), "info found a tensor that contains denies");
  } catch (const fpn::WeightError&) {
  }
}

// The writer must accept whatever the reader accepted, and reading its output must give back the
// same metadata and the same float bits.
void check_round_trip(const fpn::io::SafeTensors& file,
                      const std::map<std::string, fpn::Tensor<float>>& loaded) {
  std::vector<std::pair<std::string, fpn::TensorView<const float>>> views;
  for (const auto& tensor : file.tensors()) {
    if (const auto it = loaded.find(tensor.name); it != loaded.end()) {
      views.emplace_back(tensor.name, it->second.view());
    }
  }
  const std::string bytes = fpn::io::to_safetensors_bytes(views, file.metadata());
  const auto again =
      fpn::io::SafeTensors::parse(std::vector<unsigned char>(bytes.begin(), bytes.end()), "again");
  check(again.metadata() == file.metadata(), "metadata changed in a round trip");
  check(again.tensors().size() == views.size(), "tensor count changed in a round trip");
  for (const auto& [name, view] : views) {
    check(same_bits(again.load_float(name), loaded.at(name)), "\"" + name + "\" changed");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  start_metering();
  std::optional<fpn::io::SafeTensors> file;
  try {
    file.emplace(fpn::io::SafeTensors::parse(std::vector<unsigned char>(data, data + size),
                                             "fuzz.safetensors"));
  } catch (const fpn::Error&) {
  }
  std::map<std::string, fpn::Tensor<float>> loaded;
  if (file) {
    // parse accepted the file, so its length field and header fit in the input.
    exercise(*file, size - 8 - fpn::io::detail::read_le64(data), loaded);
  }
  const std::int64_t peak = stop_metering();
  const std::int64_t budget =
      budget_per_input_byte * static_cast<std::int64_t>(size) + budget_fixed_bytes;
  check(peak <= budget, "reading " + std::to_string(size) + " bytes took " + std::to_string(peak) +
                            " bytes of heap at once, more than the budget of " +
                            std::to_string(budget));
  // Outside any try: an error from the writer or the second read is a finding.
  if (file) check_round_trip(*file, loaded);
  return 0;
}
