#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fpn/io/safetensors.hpp"

namespace fpn::io {
namespace {

std::vector<unsigned char> as_bytes(const std::string& text) { return {text.begin(), text.end()}; }

TEST(SafeTensors, RoundTripsFloatTensorsAndMetadata) {
  Tensor<float> weight(Shape{2, 3});
  for (int i = 0; i < 6; ++i) weight.data()[i] = 0.5f * static_cast<float>(i) - 1.0f;
  Tensor<float> bias(Shape{2}, 4.0f);
  const std::string bytes =
      to_safetensors_bytes({{"w", weight.view()}, {"b", bias.view()}}, {{"arch", "resnet50_fpn"}});
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

// Hostile and malformed files. Every case must be refused with a message naming the source and the
// fault; none may crash, hang or allocate what the header claims.

const std::string prefix = "safetensors: 't.safetensors': ";

// A file: the 8-byte little-endian length of `header`, the header, then `data`.
std::vector<unsigned char> file_bytes(std::string_view header, std::string_view data = {}) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  bytes.append(header);
  bytes.append(data);
  return as_bytes(bytes);
}

// A file whose length field says `length`, followed by `rest`.
std::vector<unsigned char> with_length(std::uint64_t length, std::string_view rest) {
  std::vector<unsigned char> bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<unsigned char>(length >> (8 * i)));
  bytes.insert(bytes.end(), rest.begin(), rest.end());
  return bytes;
}

// The message of the ErrorType that `action` throws.
template <typename ErrorType, typename Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const ErrorType& error) {
    return error.what();
  }
  return "(no error)";
}

// The message of the WeightError that parsing `bytes` throws.
std::string parse_error(std::vector<unsigned char> bytes) {
  return error_of<WeightError>(
      [&] { (void)SafeTensors::parse(std::move(bytes), "t.safetensors"); });
}

// A header with one tensor entry {"w": entry} and `data_bytes` zero bytes of data.
std::string one_tensor_error(std::string_view entry, std::size_t data_bytes = 8) {
  return parse_error(
      file_bytes("{\"w\":" + std::string(entry) + "}", std::string(data_bytes, '\0')));
}

TEST(SafeTensorsHostile, FileTooShortForTheLength) {
  EXPECT_EQ(parse_error({}), prefix + "file is 0 bytes, expected at least 8 (the header length)");
  EXPECT_EQ(parse_error(as_bytes("1234567")),
            prefix + "file is 7 bytes, expected at least 8 (the header length)");
}

TEST(SafeTensorsHostile, HeaderLengthBeyondTheFile) {
  EXPECT_EQ(parse_error(with_length(100, "{}")),
            prefix + "header length 100 exceeds the 2 bytes after the length field");
  EXPECT_EQ(parse_error(with_length(1, "")),
            prefix + "header length 1 exceeds the 0 bytes after the length field");
}

TEST(SafeTensorsHostile, AbsurdHeaderLengthIsRefusedBeforeAllocating) {
  EXPECT_EQ(parse_error(with_length(std::uint64_t{1} << 63, "{}")),
            prefix +
                "header length 9223372036854775808 is larger than the limit of 100000000 "
                "bytes");
  EXPECT_EQ(parse_error(with_length(UINT64_MAX, "{}")),
            prefix +
                "header length 18446744073709551615 is larger than the limit of 100000000 "
                "bytes");
}

TEST(SafeTensorsHostile, HeaderThatIsNotJson) {
  const std::string json_error = prefix + "header is not valid JSON: ";
  const std::pair<std::string, std::string> cases[] = {
      {"", "unexpected end of header at byte 0"},
      {"   ", "unexpected end of header at byte 3"},
      {"{", "expected a string key at byte 1"},
      {"{\"a\":}", "invalid value at byte 5"},
      {"{\"a\" 1}", "expected ':' at byte 5"},
      {"{'a':1}", "expected a string key at byte 1"},
      {"{\"a\":1,}", "expected a string key at byte 7"},
      {"{\"a\":1", "expected '}' at byte 6"},
      {"{} x", "unexpected trailing characters at byte 3"},
      {"{\"a", "unterminated string at byte 3"},
      {"{\"a\\x\":1}", "invalid escape at byte 3"},
      {"{\"a\\u12g4\":1}", "invalid \\u escape at byte 7"},
      {"{\"\\udc00\":1}", "unpaired surrogate at byte 2"},
      {"{\"\\ud800x\":1}", "unpaired surrogate at byte 2"},
      {"{\"\\ud800\\u0041\":1}", "unpaired surrogate at byte 2"},
      {"{\"a\\", "unterminated escape at byte 4"},
      {"{\"a\nb\":1}", "control character in string at byte 3"},
      {"{\"a\":tru}", "invalid literal at byte 5"},
      {"{\"a\":-}", "invalid value at byte 6"},
      {"{\"a\":1.}", "invalid number at byte 7"},
      {"{\"a\":1e}", "invalid number at byte 7"},
      {std::string("{\"a\":\0}", 7), "invalid value at byte 5"},
  };
  for (const auto& [header, reason] : cases) {
    EXPECT_EQ(parse_error(file_bytes(header)), json_error + reason) << header;
  }
}

TEST(SafeTensorsHostile, DeepNestingIsRefusedWithoutExhaustingTheStack) {
  const std::string json_error =
      prefix + "header is not valid JSON: nesting deeper than 64 at byte ";
  const int levels = 10000;
  const std::string open_arrays(levels, '[');
  EXPECT_EQ(parse_error(file_bytes(open_arrays)), json_error + "65");
  EXPECT_EQ(parse_error(file_bytes(open_arrays + std::string(levels, ']'))), json_error + "65");
  std::string objects;
  for (int i = 0; i < levels; ++i) objects += "{\"a\":";
  EXPECT_EQ(parse_error(file_bytes("{\"w\":" + open_arrays)), json_error + "69");
  EXPECT_EQ(parse_error(file_bytes(objects)), json_error + "325");
}

TEST(SafeTensorsHostile, HeaderThatIsNotAnObject) {
  for (const char* header : {"[]", "[1, 2]", "\"w\"", "3", "null", "true"}) {
    EXPECT_EQ(parse_error(file_bytes(header)), prefix + "header must be a JSON object") << header;
  }
}

TEST(SafeTensorsHostile, TensorEntryWithoutItsFields) {
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[2]})"),
            prefix + "tensor \"w\" has no data_offsets");
  EXPECT_EQ(one_tensor_error(R"({"shape":[2],"data_offsets":[0,8]})"),
            prefix + "tensor \"w\" has no dtype");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","data_offsets":[0,8]})"),
            prefix + "tensor \"w\" has no shape");
  EXPECT_EQ(one_tensor_error("[1]"), prefix + "tensor \"w\" must be an object, got an array");
  EXPECT_EQ(one_tensor_error("7"), prefix + "tensor \"w\" must be an object, got 7");
}

TEST(SafeTensorsHostile, UnknownDtype) {
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]})"),
            prefix +
                "tensor \"w\": unknown dtype \"F8_E4M3\", expected one of F64, F32, F16, "
                "BF16, I64, I32, I16, I8, U8, BOOL");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"f32","shape":[2],"data_offsets":[0,8]})"),
            prefix +
                "tensor \"w\": unknown dtype \"f32\", expected one of F64, F32, F16, BF16, "
                "I64, I32, I16, I8, U8, BOOL");
  EXPECT_EQ(one_tensor_error(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"),
            prefix + "tensor \"w\": dtype must be a string");
}

TEST(SafeTensorsHostile, ShapeValuesThatAreNotSizes) {
  const std::string bad_value =
      prefix + "tensor \"w\": shape must hold non-negative integers, got ";
  const std::pair<std::string, std::string> cases[] = {
      {"[-1]", "-1"},
      {"[2.5]", "2.5"},
      {"[2e0]", "2e0"},
      {"[\"2\"]", "\"2\""},
      {"[null]", "null"},
      {"[[2]]", "an array"},
      {"[9223372036854775808]", "9223372036854775808"},    // 2^63: one past int64
      {"[99999999999999999999]", "99999999999999999999"},  // beyond uint64
  };
  for (const auto& [shape, got] : cases) {
    EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,8]})"),
              bad_value + got)
        << shape;
  }
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"),
            prefix + "tensor \"w\": shape must be an array of at most 6 non-negative integers");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[1,1,1,1,1,1,2],"data_offsets":[0,8]})"),
            prefix + "tensor \"w\": shape must be an array of at most 6 non-negative integers");
}

TEST(SafeTensorsHostile, ShapeWhoseSizeOverflows) {
  EXPECT_EQ(
      one_tensor_error(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
      prefix + "tensor \"w\": element count of shape [4294967296, 4294967296] overflows");
  EXPECT_EQ(
      one_tensor_error(R"({"dtype":"U8","shape":[9223372036854775807,2],"data_offsets":[0,8]})"),
      prefix + "tensor \"w\": element count of shape [9223372036854775807, 2] overflows");
  // 2^62 elements fit int64, 2^64 bytes of F32 do not.
  EXPECT_EQ(
      one_tensor_error(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]})"),
      prefix + "tensor \"w\": byte size of shape [4611686018427387904] overflows");
}

TEST(SafeTensorsHostile, ByteSizeThatDisagreesWithTheOffsets) {
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"),
            prefix + "tensor \"w\": shape [2] of F32 needs 8 bytes, data_offsets give 4");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F16","shape":[2,3],"data_offsets":[0,8]})"),
            prefix + "tensor \"w\": shape [2, 3] of F16 needs 12 bytes, data_offsets give 8");
}

TEST(SafeTensorsHostile, OffsetsThatAreNotARangeOfTheData) {
  const std::string w = prefix + "tensor \"w\": ";
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
            w + "data_offsets [0, 16] lie outside the data section of 8 bytes");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[0],)"
                             R"("data_offsets":[18446744073709551615,18446744073709551615]})"),
            w + "data_offsets [18446744073709551615, 18446744073709551615] lie outside the data "
                "section of 8 bytes");
  EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[1],"data_offsets":[8,4]})"),
            w + "data_offsets [8, 4] begin after they end");
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,4]", "[0,4.0]", "\"0,4\"", "[0,\"4\"]",
                              "[0,18446744073709551616]"}) {  // 2^64
    EXPECT_EQ(one_tensor_error(R"({"dtype":"F32","shape":[1],"data_offsets":)" +
                               std::string(offsets) + "}"),
              w + "data_offsets must be [begin, end] of non-negative integers")
        << offsets;
  }
}

TEST(SafeTensorsHostile, OverlappingTensors) {
  EXPECT_EQ(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   std::string(12, '\0'))),
            prefix + "tensors \"a\" [0, 8] and \"b\" [4, 12] overlap in the data section");
  // Listed out of order, and the overlap is with a tensor that is not the header's neighbour.
  EXPECT_EQ(parse_error(file_bytes(R"({"c":{"dtype":"U8","shape":[1],"data_offsets":[10,11]},)"
                                   R"("a":{"dtype":"U8","shape":[12],"data_offsets":[0,12]},)"
                                   R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                                   std::string(12, '\0'))),
            prefix + "tensors \"a\" [0, 12] and \"b\" [4, 6] overlap in the data section");
  // Two tensors sharing one range (as a tied weight might) are refused too.
  EXPECT_EQ(parse_error(file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                   std::string(8, '\0'))),
            prefix + "tensors \"a\" [0, 8] and \"b\" [0, 8] overlap in the data section");
}

TEST(SafeTensorsHostile, DuplicateNames) {
  EXPECT_EQ(parse_error(file_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                   R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                   std::string(8, '\0'))),
            prefix + "tensor \"w\" appears twice in the header");
  EXPECT_EQ(parse_error(file_bytes(R"({"__metadata__":{},"__metadata__":{}})")),
            prefix + "__metadata__ appears twice in the header");
  EXPECT_EQ(parse_error(file_bytes(R"({"__metadata__":{"k":"a","k":"b"}})")),
            prefix + "__metadata__ \"k\" appears twice");
}

TEST(SafeTensorsHostile, MetadataThatIsNotStrings) {
  EXPECT_EQ(parse_error(file_bytes(R"({"__metadata__":{"num_classes":91}})")),
            prefix + "__metadata__ \"num_classes\" must be a string, got 91");
  EXPECT_EQ(parse_error(file_bytes(R"({"__metadata__":{"eps":null}})")),
            prefix + "__metadata__ \"eps\" must be a string, got null");
  EXPECT_EQ(parse_error(file_bytes(R"({"__metadata__":["a"]})")),
            prefix + "__metadata__ must be an object, got an array");
}

TEST(SafeTensorsHostile, NonFloatTensorIsNotLoadedAsFloat) {
  const SafeTensors file = SafeTensors::parse(
      file_bytes(R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\1')),
      "t.safetensors");
  EXPECT_EQ(file.info("i").dtype, DType::i64);
  EXPECT_EQ(error_of<WeightError>([&] { (void)file.load_float("i"); }),
            prefix +
                "tensor \"i\" has dtype I64, expected a floating-point dtype (F32, F16, "
                "BF16 or F64)");
}

TEST(SafeTensorsHostile, MissingTensorName) {
  const SafeTensors file = SafeTensors::parse(file_bytes("{}"), "t.safetensors");
  EXPECT_FALSE(file.contains("backbone.body.conv1.weight"));
  const std::string missing =
      "safetensors: 't.safetensors' has no tensor \"backbone.body.conv1.weight\"";
  EXPECT_EQ(error_of<WeightError>([&] { (void)file.info("backbone.body.conv1.weight"); }), missing);
  EXPECT_EQ(error_of<WeightError>([&] { (void)file.load_float("backbone.body.conv1.weight"); }),
            missing);
  EXPECT_EQ(error_of<WeightError>([&] {
              (void)file.load_float("backbone.body.conv1.weight", Shape{64, 3, 7, 7});
            }),
            missing);
}

TEST(SafeTensorsHostile, EmptyAndZeroSizeTensorsAreFine) {
  const SafeTensors empty = SafeTensors::parse(file_bytes("{}"), "t.safetensors");
  EXPECT_TRUE(empty.tensors().empty());
  EXPECT_TRUE(empty.metadata().empty());
  const SafeTensors zero = SafeTensors::parse(
      file_bytes(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})"), "t.safetensors");
  EXPECT_EQ(zero.load_float("z").shape(), (Shape{0, 3}));
}

// Files on disk: each test works in its own fresh directory.

class ScratchDirectory {
 public:
  ScratchDirectory() {
    std::random_device entropy;
    path_ = std::filesystem::temp_directory_path() /
            ("fpn_test_safetensors_" + std::to_string(entropy()) + std::to_string(entropy()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      names.push_back(entry.path().filename().string());
    }
    std::ranges::sort(names);
    return names;
  }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(SafeTensorsFiles, OpenRefusesMissingPathsAndDirectories) {
  const ScratchDirectory scratch;
  const std::string missing = (scratch / "missing.safetensors").string();
  EXPECT_EQ(error_of<IoError>([&] { (void)SafeTensors::open(missing); }),
            "safetensors: cannot open '" + missing + "': no such file");
  EXPECT_EQ(error_of<IoError>([&] { (void)SafeTensors::open(scratch.path()); }),
            "safetensors: cannot open '" + scratch.path().string() + "': not a regular file");
}

TEST(SafeTensorsFiles, OpenNamesTheFileInFormatErrors) {
  const ScratchDirectory scratch;
  const std::filesystem::path path = scratch / "short.safetensors";
  write_file(path, "1234");
  EXPECT_EQ(error_of<WeightError>([&] { (void)SafeTensors::open(path); }),
            "safetensors: '" + path.string() +
                "': file is 4 bytes, expected at least 8 (the header length)");
}

// Written by tools/fpn_tools/safetensors_io.py (json.dumps with ',' ':' separators and ASCII
// escapes, header padded with spaces to 8 bytes) from
//   {"backbone.w": float32 [[1.5, -2, 0.25], [3, 1e-3, -0.0]], "h\"q": float16 [1, -2],
//    "count": int64 [7]}, metadata {"arch": "maskrcnn_resnet50_fpn", "note": "café"}.
TEST(SafeTensorsFiles, ReadsWhatThePythonWriterWrites) {
  const std::string header =
      R"({"__metadata__":{"arch":"maskrcnn_resnet50_fpn","note":"caf\u00e9"},)"
      R"("backbone.w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("h\"q":{"dtype":"F16","shape":[2],"data_offsets":[24,28]},)"
      R"("count":{"dtype":"I64","shape":[1],"data_offsets":[28,36]}})"
      "      ";
  ASSERT_EQ(header.size(), 256u);
  const unsigned char data[] = {
      0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x80, 0x3e,  // 1.5, -2, 0.25
      0x00, 0x00, 0x40, 0x40, 0x6f, 0x12, 0x83, 0x3a, 0x00, 0x00, 0x00, 0x80,  // 3, 1e-3, -0.0
      0x00, 0x3c, 0x00, 0xc0,                                                  // F16 1, -2
      0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};                         // I64 7
  const ScratchDirectory scratch;
  const std::filesystem::path path = scratch / "python.safetensors";
  const std::vector<unsigned char> bytes =
      file_bytes(header, std::string_view(reinterpret_cast<const char*>(data), sizeof data));
  write_file(path, std::string(bytes.begin(), bytes.end()));

  const SafeTensors file = SafeTensors::open(path);
  EXPECT_EQ(file.metadata().at("arch"), "maskrcnn_resnet50_fpn");
  EXPECT_EQ(file.metadata().at("note"), "caf\xC3\xA9");
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[1].name, "h\"q");
  const Tensor<float> weight = file.load_float("backbone.w", Shape{2, 3});
  const float expected[] = {1.5f, -2.0f, 0.25f, 3.0f, 1e-3f, -0.0f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(weight.data()[i], expected[i]) << i;
  EXPECT_TRUE(std::signbit(weight.data()[5]));
  const Tensor<float> half = file.load_float("h\"q");
  EXPECT_EQ(half.at(0), 1.0f);
  EXPECT_EQ(half.at(1), -2.0f);
  EXPECT_EQ(file.info("count").dtype, DType::i64);
}

TEST(SafeTensorsFiles, SaveThenOpenRoundTrips) {
  const ScratchDirectory scratch;
  Tensor<float> weight(Shape{3, 1, 2});
  for (int i = 0; i < 6; ++i) weight.data()[i] = std::ldexp(1.0f, i - 3) - 0.1f;
  const std::filesystem::path path = scratch / "w.safetensors";
  save_safetensors(path, {{"roi_heads.\"odd\\name", weight.view()}}, {{"note", "a\nb"}});
  const SafeTensors file = SafeTensors::open(path);
  EXPECT_EQ(file.metadata().at("note"), "a\nb");
  const Tensor<float> loaded = file.load_float("roi_heads.\"odd\\name", Shape{3, 1, 2});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(loaded.data()[i], weight.data()[i]) << i;
  EXPECT_EQ(scratch.entries(), std::vector<std::string>{"w.safetensors"});
}

// open() reads each tensor from the file when it is loaded: a file replaced meanwhile (a new file
// renamed over it) is still read as it was opened; one truncated meanwhile is refused with an
// IoError naming it, not read past its end.
TEST(SafeTensorsFiles, OpenReadsTensorsFromTheFileAsOpened) {
  const ScratchDirectory scratch;
  Tensor<float> first(Shape{4}, 1.0f), second(Shape{1000}, 2.0f);
  const std::filesystem::path path = scratch / "w.safetensors";
  save_safetensors(path, {{"a", first.view()}, {"b", second.view()}});
  const SafeTensors file = SafeTensors::open(path);
  Tensor<float> other(Shape{4}, 7.0f);
  save_safetensors(path, {{"a", other.view()}});  // atomically: a new file renamed over it
  EXPECT_EQ(file.load_float("a", Shape{4}).data()[3], 1.0f);
  EXPECT_EQ(file.load_float("b", Shape{1000}).data()[999], 2.0f);

  save_safetensors(path, {{"a", first.view()}, {"b", second.view()}});
  const SafeTensors opened = SafeTensors::open(path);
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  EXPECT_EQ(opened.load_float("a", Shape{4}).data()[0], 1.0f);
  const std::string error = error_of<IoError>([&] { (void)opened.load_float("b"); });
  EXPECT_NE(error.find("safetensors: cannot read 4000 bytes at offset "), std::string::npos)
      << error;
  EXPECT_NE(error.find("of '" + path.string() + "': the file ended early"), std::string::npos)
      << error;
}

TEST(SafeTensorsFiles, SaveIntoAMissingDirectoryNamesThePath) {
  const ScratchDirectory scratch;
  const std::filesystem::path path = scratch / "absent" / "w.safetensors";
  Tensor<float> weight(Shape{2}, 1.0f);
  EXPECT_EQ(error_of<IoError>([&] {
              save_safetensors(path, {{"w", weight.view()}});
            }),
            "cannot write '" + path.string() + "': directory '" + (scratch / "absent").string() +
                "' does not exist");
  EXPECT_TRUE(scratch.entries().empty());
}

TEST(SafeTensorsFiles, FailedSaveLeavesTheExistingFileUnchanged) {
  const ScratchDirectory scratch;
  const std::filesystem::path path = scratch / "w.safetensors";
  write_file(path, "previous contents");
  Tensor<float> weight(Shape{2}, 1.0f);
  // Names the reader would refuse are refused before anything is written.
  EXPECT_EQ(error_of<WeightError>([&] {
              save_safetensors(path, {{"w", weight.view()}, {"w", weight.view()}});
            }),
            "safetensors: tensor \"w\" appears twice");
  EXPECT_EQ(error_of<WeightError>([&] {
              save_safetensors(path, {{"__metadata__", weight}});
            }),
            "safetensors: \"__metadata__\" is reserved and cannot name a tensor");
  EXPECT_EQ(read_file(path), "previous contents");
  // A target that cannot be replaced (a directory) fails at the rename; no temporary remains.
  const std::filesystem::path directory = scratch / "taken";
  std::filesystem::create_directory(directory);
  EXPECT_EQ(error_of<IoError>([&] {
              save_safetensors(directory, {{"w", weight.view()}});
            }),
            "cannot write '" + directory.string() + "': rename from temporary file failed");
  EXPECT_EQ(scratch.entries(), (std::vector<std::string>{"taken", "w.safetensors"}));
  EXPECT_EQ(read_file(path), "previous contents");
}
}  // namespace
}  // namespace fpn::io
