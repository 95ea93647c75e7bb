// main() for the fuzz targets where libFuzzer is not available (GCC): runs LLVMFuzzerTestOneInput
// once on every file named on the command line, or found directly in a directory named there, in
// name order. Replaying the committed corpus this way makes every seed, and every crash once
// fixed, a regression test of every build.
//
//   fuzz_replay_<target> <file or directory>...
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path argument(argv[i]);
    if (fs::is_directory(argument)) {
      for (const auto& entry : fs::directory_iterator(argument)) {
        if (entry.is_regular_file()) inputs.push_back(entry.path());
      }
    } else if (fs::is_regular_file(argument)) {
      inputs.push_back(argument);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], argv[i]);
      return 2;
    }
  }
  // A replay of nothing would pass while testing nothing, e.g. with a mistyped corpus path.
  if (inputs.empty()) {
    std::fprintf(stderr, "usage: %s <file or directory>... (no inputs found)\n", argv[0]);
    return 2;
  }
  std::sort(inputs.begin(), inputs.end());
  for (const fs::path& input : inputs) {
    // Named before running, so that a crash's log says which input it was.
    std::fprintf(stderr, "replaying %s\n", input.string().c_str());
    const std::vector<std::uint8_t> bytes = read_file(input);
    // An empty vector's data() may be null; libFuzzer passes a valid pointer even for no bytes.
    const std::uint8_t none = 0;
    LLVMFuzzerTestOneInput(bytes.empty() ? &none : bytes.data(), bytes.size());
  }
  std::fprintf(stderr, "replayed %zu inputs\n", inputs.size());
  return 0;
}
