// fpn's thread pool: every index runs once, errors reach the caller, nested calls run inline,
// ThreadLimit bounds a call; ops and a whole detector give bitwise-identical results at 1, 2 and
// 3 threads; several threads share one loaded detector and each gets the single-threaded result;
// a detector loaded on several threads equals one loaded on one, with a sequential load's errors.
// CI also runs this binary under ThreadSanitizer (FPN_SANITIZE=thread).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <thread>
#include <vector>

#include "fpn/core/build_info.hpp"
#include "fpn/core/thread_pool.hpp"
#include "fpn/io/safetensors.hpp"
#include "fpn/models/shapes_demo.hpp"
#include "fpn/nn/weights.hpp"
#include "fpn/ops/conv2d.hpp"
#include "fpn/ops/conv_transpose2d.hpp"
#include "fpn/ops/linear.hpp"
#include "fpn/ops/packed_linear.hpp"
#include "fpn/ops/roi_align.hpp"

namespace fpn {
namespace {

Tensor<float> random_tensor(const Shape& shape, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  Tensor<float> tensor(shape);
  for (float& value : tensor.span()) value = uniform(generator);
  return tensor;
}

bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
  if (!(a.shape() == b.shape())) return false;
  return std::equal(a.span().begin(), a.span().end(), b.span().begin(),
                    [](float x, float y) { return std::memcmp(&x, &y, sizeof(float)) == 0; });
}

TEST(ThreadPool, RunsEveryIndexOnceOnSeveralThreads) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> visits(1000);
  std::mutex mutex;
  std::set<std::thread::id> threads;
  std::atomic<int> started{0};
  pool.parallel_for(1000, 3, [&](std::int64_t index, int slot) {
    ASSERT_GE(slot, 0);
    ASSERT_LT(slot, 3);
    // The first tasks wait (bounded) until a second thread has started one, so that the test
    // shows the pool's workers really join the caller.
    if (started.fetch_add(1) < 2) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (started.load() < 2 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
    }
    visits[static_cast<std::size_t>(index)].fetch_add(1);
    const std::lock_guard lock(mutex);
    threads.insert(std::this_thread::get_id());
  });
  for (std::size_t i = 0; i < visits.size(); ++i) ASSERT_EQ(visits[i].load(), 1) << "index " << i;
  EXPECT_GE(threads.size(), 2u);
  EXPECT_LE(threads.size(), 3u);
}

TEST(ThreadPool, TheFirstErrorReachesTheCallerAndThePoolStaysUsable) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100, 2,
                                 [](std::int64_t index, int) {
                                   if (index == 17) throw std::runtime_error("task 17 failed");
                                 }),
               std::runtime_error);
  std::atomic<std::int64_t> sum{0};
  pool.parallel_for(100, 2, [&](std::int64_t index, int) { sum += index; });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, NestedCallsRunInlineOnTheTaskThread) {
  ThreadPool pool(2);
  std::atomic<int> mismatches{0};
  std::atomic<int> inner_calls{0};
  pool.parallel_for(8, 2, [&](std::int64_t, int) {
    const auto outer = std::this_thread::get_id();
    EXPECT_EQ(current_threads(), 1);
    pool.parallel_for(8, 2, [&](std::int64_t, int slot) {
      if (std::this_thread::get_id() != outer || slot != 0) ++mismatches;
      ++inner_calls;
    });
  });
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(inner_calls.load(), 64);
}

TEST(ThreadPool, ThreadLimitBoundsTheCallsOfThisThreadOnly) {
  const int default_threads = ThreadPool::global().default_threads();
  EXPECT_EQ(default_threads, available_cpus());
  {
    ThreadLimit limit(1);
    EXPECT_EQ(current_threads(), 1);
    std::set<std::thread::id> threads;
    detail::parallel_for(64, [&](std::int64_t, int) { threads.insert(std::this_thread::get_id()); });
    EXPECT_EQ(threads.size(), 1u);
    {
      ThreadLimit inner(3);
      EXPECT_EQ(current_threads(), 3);
    }
    EXPECT_EQ(current_threads(), 1);
    std::thread other([&] { EXPECT_EQ(current_threads(), default_threads); });
    other.join();
  }
  EXPECT_EQ(current_threads(), default_threads);
}

TEST(ThreadPool, BadThreadCountsAreErrors) {
  try {
    ThreadLimit limit(-1);
    FAIL() << "ThreadLimit(-1) accepted";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "ThreadLimit: threads must be in [0, 1024] (0: one per available CPU), got -1");
  }
  EXPECT_THROW(ThreadPool(max_threads + 1), ArgumentError);
}

TEST(ThreadPool, ConcurrentCallersShareThePool) {
  std::vector<std::int64_t> sums(4, 0);
  std::vector<std::thread> callers;
  for (int caller = 0; caller < 4; ++caller) {
    callers.emplace_back([&, caller] {
      ThreadLimit limit(2);
      for (int round = 0; round < 50; ++round) {
        std::atomic<std::int64_t> sum{0};
        detail::parallel_for(200, [&](std::int64_t index, int) { sum += index + caller; });
        sums[static_cast<std::size_t>(caller)] += sum.load();
      }
    });
  }
  for (auto& thread : callers) thread.join();
  for (int caller = 0; caller < 4; ++caller) {
    EXPECT_EQ(sums[static_cast<std::size_t>(caller)], 50 * (19900 + 200 * caller));
  }
}

// Runs f under 1, 2 and 3 threads and checks the results are bitwise equal.
template <typename F>
void expect_same_at_every_thread_count(F f) {
  Tensor<float> reference = [&] {
    ThreadLimit limit(1);
    return f();
  }();
  for (int threads : {2, 3}) {
    ThreadLimit limit(threads);
    EXPECT_TRUE(bitwise_equal(f(), reference)) << threads << " threads";
  }
}

TEST(ThreadCounts, ConvolutionsAreBitwiseEqual) {
  // Winograd (3x3 s1 p1, many pixels), im2col tiles (stride 2), the few-tiles path whose GEMMs are
  // split (a small deep map), and 1x1 convs.
  const Tensor<float> large = random_tensor(Shape{1, 32, 50, 76}, 1);
  const Tensor<float> small = random_tensor(Shape{1, 512, 7, 9}, 2);
  const Tensor<float> w3 = random_tensor(Shape{48, 32, 3, 3}, 3, 0.1f);
  const Tensor<float> w1 = random_tensor(Shape{1024, 512, 1, 1}, 4, 0.05f);
  const Tensor<float> w3_small = random_tensor(Shape{256, 512, 3, 3}, 5, 0.02f);
  const Tensor<float> bias = random_tensor(Shape{48}, 6);
  expect_same_at_every_thread_count(
      [&] { return ops::conv2d<float>(large, w3, bias, {1, 1, ops::Activation::relu}); });
  expect_same_at_every_thread_count(
      [&] { return ops::conv2d<float>(large, w3, bias, {2, 1}); });
  expect_same_at_every_thread_count([&] { return ops::conv2d<float>(small, w1, ops::Conv2dParams{}); });
  expect_same_at_every_thread_count(
      [&] { return ops::conv2d<float>(small, w3_small, {1, 1, ops::Activation::identity, ops::Conv2dAlgorithm::im2col}); });
}

TEST(ThreadCounts, LinearTransposedConvAndRoiAlignAreBitwiseEqual) {
  const Tensor<float> x = random_tensor(Shape{200, 3136}, 7);
  const Tensor<float> w = random_tensor(Shape{1024, 3136}, 8, 0.02f);
  const Tensor<float> b = random_tensor(Shape{1024}, 9);
  expect_same_at_every_thread_count([&] { return ops::linear<float>(x, w, b, ops::Activation::relu); });
  const ops::PackedLinearWeight packed(w);
  expect_same_at_every_thread_count([&] { return ops::linear(x, packed, b, ops::Activation::relu); });

  const Tensor<float> maps = random_tensor(Shape{8, 64, 14, 14}, 10);
  const Tensor<float> up = random_tensor(Shape{64, 64, 2, 2}, 11, 0.1f);
  const Tensor<float> up_bias = random_tensor(Shape{64}, 12);
  expect_same_at_every_thread_count(
      [&] { return ops::conv_transpose2d<float>(maps, up, up_bias, 2, ops::Activation::relu); });

  const Tensor<float> features = random_tensor(Shape{1, 32, 40, 60}, 13);
  Tensor<float> boxes(Shape{50, 5});
  std::mt19937 generator(14);
  std::uniform_real_distribution<float> corner(0.0f, 200.0f);
  for (std::int64_t i = 0; i < 50; ++i) {
    const float x0 = corner(generator), y0 = corner(generator) * 0.6f;
    boxes.at(i, 0) = 0;
    boxes.at(i, 1) = x0;
    boxes.at(i, 2) = y0;
    boxes.at(i, 3) = x0 + 5 + corner(generator) * 0.3f;
    boxes.at(i, 4) = y0 + 5 + corner(generator) * 0.2f;
  }
  expect_same_at_every_thread_count([&] {
    return ops::roi_align<float>(features, boxes, {7, 7, 0.25f, 2, false});
  });
}

// A 480x640 scene of filled shapes on a textured background, like the demo model's training
// scenes, so that it detects several objects.
std::vector<std::uint8_t> shapes_scene() {
  const std::int64_t height = 480, width = 640;
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(height * width * 3));
  std::mt19937 generator(3);
  std::uniform_int_distribution<int> noise(-12, 12);
  for (std::int64_t y = 0; y < height; ++y) {
    for (std::int64_t x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int base = 110 + static_cast<int>((x + 2 * y) % 40) + 10 * c;
        pixels[static_cast<std::size_t>((y * width + x) * 3 + c)] =
            static_cast<std::uint8_t>(std::clamp(base + noise(generator), 0, 255));
      }
    }
  }
  struct Shape2D { bool circle; int cx, cy, radius; std::uint8_t r, g, b; };
  const Shape2D shapes[] = {{true, 120, 120, 60, 220, 40, 40},  {false, 400, 150, 50, 40, 200, 60},
                            {true, 520, 360, 45, 50, 60, 220},  {false, 200, 350, 70, 230, 210, 40},
                            {true, 330, 300, 30, 240, 240, 240}};
  for (const Shape2D& s : shapes) {
    for (int y = s.cy - s.radius; y <= s.cy + s.radius; ++y) {
      for (int x = s.cx - s.radius; x <= s.cx + s.radius; ++x) {
        if (y < 0 || y >= height || x < 0 || x >= width) continue;
        const int dx = x - s.cx, dy = y - s.cy;
        if (s.circle && dx * dx + dy * dy > s.radius * s.radius) continue;
        std::uint8_t* p = &pixels[static_cast<std::size_t>((y * width + x) * 3)];
        p[0] = s.r;
        p[1] = s.g;
        p[2] = s.b;
      }
    }
  }
  return pixels;
}

std::string demo_model_path() {
  return std::string(FPN_SOURCE_DIR) + "/examples/data/demo_shapes_maskrcnn.safetensors";
}

// Everything a detection holds, compared exactly.
void expect_identical(const Detections& actual, const Detections& expected, const char* what,
                      int number) {
  SCOPED_TRACE(::testing::Message() << what << " " << number);
  ASSERT_EQ(actual.items.size(), expected.items.size());
  for (std::size_t i = 0; i < expected.items.size(); ++i) {
    const Detection& a = actual.items[i];
    const Detection& e = expected.items[i];
    EXPECT_EQ(a.label, e.label) << "detection " << i;
    EXPECT_EQ(a.score, e.score) << "detection " << i;
    EXPECT_EQ(a.box, e.box) << "detection " << i;
    ASSERT_EQ(a.mask.has_value(), e.mask.has_value()) << "detection " << i;
    if (e.mask) {
      EXPECT_EQ(a.mask->x0, e.mask->x0);
      EXPECT_EQ(a.mask->y0, e.mask->y0);
      EXPECT_EQ(a.mask->probabilities, e.mask->probabilities) << "detection " << i;
    }
  }
}

class DemoDetector : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ThreadLimit limit(1);  // a sequential load and a sequential call make the reference
    detector_ = new MaskRCNNShapesDemo(MaskRCNNShapesDemo::load(demo_model_path()));
    pixels_ = new std::vector<std::uint8_t>(shapes_scene());
    reference_ = new Detections(detector_->detect(image()));
  }
  static void TearDownTestSuite() {
    delete detector_;
    delete pixels_;
    delete reference_;
  }
  static nn::ImageView image() { return {pixels_->data(), 480, 640}; }

  static inline MaskRCNNShapesDemo* detector_ = nullptr;
  static inline std::vector<std::uint8_t>* pixels_ = nullptr;
  static inline Detections* reference_ = nullptr;
};

TEST_F(DemoDetector, TheSceneHasSeveralDetections) {
  // The comparisons below mean something only if there is something to compare.
  std::size_t confident = 0;
  for (const Detection& d : reference_->items) confident += d.score > 0.5f;
  EXPECT_GE(confident, 3u);
}

TEST_F(DemoDetector, SameDetectionsAtOneTwoAndThreeThreads) {
  for (int threads : {2, 3}) {
    ThreadLimit limit(threads);
    expect_identical(detector_->detect(image()), *reference_, "threads:", threads);
  }
}

TEST_F(DemoDetector, ItsOwnThreadCountOverridesTheCallersAndZeroDefers) {
  MaskRCNNShapesDemo detector = MaskRCNNShapesDemo::load(demo_model_path());
  EXPECT_EQ(detector.num_threads(), 0);
  detector.set_num_threads(3);
  {
    ThreadLimit limit(1);  // the detector's 3 win for its own calls
    expect_identical(detector.detect(image()), *reference_, "set_num_threads", 3);
    EXPECT_EQ(current_threads(), 1);
  }
  try {
    detector.set_num_threads(-2);
    FAIL() << "set_num_threads(-2) accepted";
  } catch (const ArgumentError& error) {
    EXPECT_STREQ(error.what(),
                 "TwoStageDetector::set_num_threads: threads must be in [0, 1024] (0: the "
                 "caller's), got -2");
  }
  EXPECT_EQ(detector.num_threads(), 3);
}

TEST_F(DemoDetector, ConcurrentCallsOnOneDetectorGiveTheSingleThreadedResult) {
  // Four user threads, one detector, each with the pool's default threads: results must not
  // depend on which calls run beside which.
  std::vector<Detections> results(4);
  std::vector<std::thread> callers;
  for (std::size_t i = 0; i < results.size(); ++i) {
    callers.emplace_back([&, i] { results[i] = detector_->detect(image()); });
  }
  for (auto& thread : callers) thread.join();
  for (std::size_t i = 0; i < results.size(); ++i) {
    expect_identical(results[i], *reference_, "concurrent call", static_cast<int>(i));
  }
}

// Forwards to a file, refusing the names in `hidden` as a file without them would, and records
// the threads that called load.
class RecordingSource final : public nn::WeightSource {
 public:
  RecordingSource(const io::SafeTensors& file, bool concurrent, std::set<std::string> hidden = {})
      : file_(file), concurrent_(concurrent), hidden_(std::move(hidden)) {}
  Tensor<float> load(const std::string& name, const Shape& expected) const override {
    {
      const std::lock_guard lock(mutex_);
      threads_.insert(std::this_thread::get_id());
    }
    if (hidden_.contains(name)) throw WeightError("recording source: no tensor \"" + name + "\"");
    return file_.load(name, expected);
  }
  bool contains(const std::string& name) const override {
    return !hidden_.contains(name) && file_.contains(name);
  }
  std::optional<std::string> metadata(const std::string& key) const override { return file_.metadata(key); }
  std::string describe() const override { return file_.describe(); }
  std::optional<std::vector<std::string>> names() const override { return file_.names(); }
  bool concurrent_loads() const override { return concurrent_; }

  std::set<std::thread::id> threads() const {
    const std::lock_guard lock(mutex_);
    return threads_;
  }

 private:
  nn::SafeTensorsSource file_;
  bool concurrent_;
  std::set<std::string> hidden_;
  mutable std::mutex mutex_;
  mutable std::set<std::thread::id> threads_;
};

// Several threads read one opened file at once (positioned reads): each gets every tensor's bytes.
TEST(SafeTensorsFile, SeveralThreadsLoadFromOneFileAtOnce) {
  const io::SafeTensors file = io::SafeTensors::open(demo_model_path());
  std::vector<Tensor<float>> expected;
  for (const io::TensorInfo& tensor : file.tensors()) expected.push_back(file.load_float(tensor.name));
  ASSERT_GT(expected.size(), 50u);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> readers;
  for (std::size_t r = 0; r < mismatches.size(); ++r) {
    readers.emplace_back([&, r] {
      // Each reader in its own order, so that reads of different tensors overlap.
      for (std::size_t k = 0; k < expected.size(); ++k) {
        const std::size_t i = (k * (2 * r + 1) + r) % expected.size();
        mismatches[r] += !bitwise_equal(file.load_float(file.tensors()[i].name), expected[i]);
      }
    });
  }
  for (auto& thread : readers) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// A detector loads its backbone and its heads as two tasks when the source allows it (a file
// does): the weights, and so the detections, are those of a sequential load.
TEST_F(DemoDetector, LoadedOnSeveralThreadsItDetectsAsLoadedOnOne) {
  for (int threads : {2, 3}) {
    const MaskRCNNShapesDemo detector = [&] {
      ThreadLimit limit(threads);
      return MaskRCNNShapesDemo::load(demo_model_path());
    }();
    ThreadLimit limit(1);
    expect_identical(detector.detect(image()), *reference_, "loaded on threads:", threads);
  }
}

TEST_F(DemoDetector, ASourceThatDoesNotAllowConcurrentLoadsIsReadOnTheCallersThreadOnly) {
  const io::SafeTensors file = io::SafeTensors::open(demo_model_path());
  const auto source = std::make_shared<RecordingSource>(file, false);
  ThreadLimit limit(3);
  const MaskRCNNShapesDemo detector = MaskRCNNShapesDemo::load(nn::WeightReader(source));
  EXPECT_EQ(source->threads(), std::set<std::thread::id>{std::this_thread::get_id()});
  expect_identical(detector.detect(image()), *reference_, "sequential source", 0);
}

// Whichever part fails first in time, the error reported is the one a sequential load meets
// first: the backbone's, then the heads'.
TEST_F(DemoDetector, ConcurrentLoadsReportTheErrorOfASequentialLoad) {
  const io::SafeTensors file = io::SafeTensors::open(demo_model_path());
  const std::string backbone = "backbone.body.layer1.0.conv1.weight";
  const std::string head = "roi_heads.box_head.fc6.weight";
  ThreadLimit limit(2);
  for (int attempt = 0; attempt < 5; ++attempt) {
    for (const auto& [hidden, named] :
         {std::pair<std::set<std::string>, std::string>{{backbone, head}, backbone},
          {{head}, head},
          {{backbone}, backbone}}) {
      const auto source = std::make_shared<RecordingSource>(file, true, hidden);
      try {
        (void)MaskRCNNShapesDemo::load(nn::WeightReader(source));
        ADD_FAILURE() << "a load without " << named << " succeeded";
      } catch (const WeightError& error) {
        EXPECT_EQ(std::string(error.what()), "recording source: no tensor \"" + named + "\"");
      }
    }
  }
}

}  // namespace
}  // namespace fpn
