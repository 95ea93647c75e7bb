// A user's program, built with no flag of its own: fpn must still run on several threads.
//   1. safetensors round trip: shape, every value and the metadata survive;
//   2. threads: fpn's default is one thread per available CPU, and a parallel call of the
//      library really runs on more than one thread (with ThreadLimit(2), on any machine);
//   3. the SIMD level: built as `app` (fpn::fpn, the compiler's defaults) it reports what it was
//      compiled for; built as `app_native` (fpn::native, FPN_CONSUMER_NATIVE defined) it must have
//      been compiled for the best level the CPU offers.
// Exits 0 only if every check holds.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fpn/fpn.hpp>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

bool round_trip() {
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
  return mismatches == 0 && metadata_ok;
}

// The distinct threads that ran a parallel call of `threads` threads. Each of the first tasks
// waits (at most 10 s) for a second thread to start one, so a pool whose workers never join shows.
std::size_t threads_used(int threads) {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  std::atomic<int> started{0};
  fpn::ThreadPool::global().parallel_for(64, threads, [&](std::int64_t, int) {
    if (started.fetch_add(1) < threads) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (started.load() < threads && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
    }
    const std::lock_guard lock(mutex);
    ids.insert(std::this_thread::get_id());
  });
  return ids.size();
}

}  // namespace

int main() {
  bool ok = round_trip();

  const fpn::BuildInfo info = fpn::build_info();
  std::printf("fpn_consumer: %s\n", info.str().c_str());
  const int cpus = fpn::available_cpus();
  if (info.threads != cpus) {
    std::printf("fpn_consumer: default threads %d, expected one per available CPU (%d)\n",
                info.threads, cpus);
    ok = false;
  }
  const std::size_t by_default = threads_used(info.threads);
  const std::size_t two = threads_used(2);
  std::printf("fpn_consumer: a parallel call ran on %zu threads by default, %zu with 2\n",
              by_default, two);
  if (two != 2 || (cpus > 1 && by_default < 2)) {
    std::printf("fpn_consumer: expected more than one thread\n");
    ok = false;
  }
#ifdef FPN_CONSUMER_NATIVE
  if (info.compiled != info.cpu) {
    std::printf("fpn_consumer: built with fpn::native for %s, but the CPU offers %s\n",
                fpn::to_string(info.compiled), fpn::to_string(info.cpu));
    ok = false;
  }
#endif
  return ok ? 0 : 1;
}
