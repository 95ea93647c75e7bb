// safetensors (https://huggingface.co/docs/safetensors): 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then raw data.
// Every structural fault is refused with a WeightError naming the file and the tensor.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#define FPN_SAFETENSORS_PREAD 1
#else
#define FPN_SAFETENSORS_PREAD 0
#endif

#include "fpn/core/detail/json.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/atomic_file.hpp"

namespace fpn::io {

enum class DType { f64, f32, f16, bf16, i64, i32, i16, i8, u8, boolean };

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::int64_t size;
};

inline constexpr DTypeInfo dtype_table[] = {
    {DType::f64, "F64", 8}, {DType::f32, "F32", 4}, {DType::f16, "F16", 2},
    {DType::bf16, "BF16", 2}, {DType::i64, "I64", 8}, {DType::i32, "I32", 4},
    {DType::i16, "I16", 2}, {DType::i8, "I8", 1}, {DType::u8, "U8", 1},
    {DType::boolean, "BOOL", 1},
};

inline const DTypeInfo& dtype_info(DType dtype) {
  for (const auto& info : dtype_table) {
    if (info.dtype == dtype) return info;
  }
  FPN_ASSERT(false);
  return dtype_table[0];
}

namespace detail {

// IEEE half -> float, exact for every value including subnormals, infinities and NaN.
inline float half_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  std::uint32_t exponent = (half >> 10) & 0x1Fu;
  std::uint32_t mantissa = half & 0x3FFu;
  std::uint32_t bits = 0;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
  } else {
    bits = sign;
  }
  return std::bit_cast<float>(bits);
}

inline std::uint64_t read_le64(const unsigned char* bytes) {
  std::uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

}  // namespace detail

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  std::uint64_t begin;  // byte offsets within the data section
  std::uint64_t end;
};

class SafeTensors {
 public:
  // The official format caps the header at 100 MB; anything larger is refused before allocating.
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  // Reads the header now and each tensor's bytes when it is loaded, straight into its tensor: a
  // model's weights cost their own size, never that plus the file's. The file stays open for
  // that; replacing it is safe (the open file is read), truncating it makes later loads fail with
  // an IoError. Several threads may load from one SafeTensors at once (positioned reads; where the
  // system has none, one file position and a lock serialise them).
  static SafeTensors open(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error)) {
      throw IoError("safetensors: cannot open '" + path.string() + "': no such file");
    }
    if (!std::filesystem::is_regular_file(path, error)) {
      throw IoError("safetensors: cannot open '" + path.string() + "': not a regular file");
    }
    auto file = std::make_unique<OpenFile>();
    if (!file->open(path)) throw IoError("safetensors: cannot open '" + path.string() + "' for reading");
    const auto size = std::filesystem::file_size(path, error);
    if (error) throw IoError("safetensors: cannot read the size of '" + path.string() + "'");
    // The length field, then the header if index() will get as far as reading it.
    std::uint64_t prefix = std::min<std::uint64_t>(size, 8);
    std::vector<unsigned char> bytes(prefix);
    file->read(0, bytes.data(), prefix, path.string());
    if (size >= 8) {
      const std::uint64_t header_size = detail::read_le64(bytes.data());
      if (header_size <= max_header_bytes && header_size <= size - 8) {
        bytes.resize(8 + header_size);
        file->read(8, bytes.data() + 8, header_size, path.string());
      }
    }
    SafeTensors result;
    result.source_ = path.string();
    result.bytes_ = std::move(bytes);
    result.total_size_ = size;
    result.file_ = std::move(file);
    result.index();
    return result;
  }

  // source names the bytes in error messages (usually the file name).
  static SafeTensors parse(std::vector<unsigned char> bytes, std::string source) {
    SafeTensors file;
    file.source_ = std::move(source);
    file.total_size_ = bytes.size();
    file.bytes_ = std::move(bytes);
    file.index();
    return file;
  }

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor names in file order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(std::string_view name) const { return find(name) != nullptr; }

  const TensorInfo& info(std::string_view name) const {
    const TensorInfo* found = find(name);
    if (found == nullptr) {
      throw WeightError("safetensors: '" + source_ + "' has no tensor \"" + std::string(name) +
                        "\"");
    }
    return *found;
  }

  // The tensor converted to float (from F32, F16, BF16 or F64).
  Tensor<float> load_float(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    // Refused before allocating: the float copy of an 8-bit tensor would be four times its bytes.
    if (tensor.dtype != DType::f32 && tensor.dtype != DType::f16 && tensor.dtype != DType::bf16 &&
        tensor.dtype != DType::f64) {
      throw WeightError("safetensors: '" + source_ + "': tensor \"" + tensor.name +
                        "\" has dtype " + std::string(dtype_info(tensor.dtype).name) +
                        ", expected a floating-point dtype (F32, F16, BF16 or F64)");
    }
    Tensor<float> out = Tensor<float>::uninitialized(tensor.shape);
    const std::int64_t count = out.numel();
    float* target = out.data();
    if (tensor.dtype == DType::f32) {
      // Straight into the tensor: F32 is stored as little-endian IEEE floats.
      static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
      read_data(tensor, reinterpret_cast<unsigned char*>(target));
      return out;
    }
    std::vector<unsigned char> staged;
    const unsigned char* source = nullptr;
    if (file_ != nullptr) {
      staged.resize(static_cast<std::size_t>(tensor.end - tensor.begin));
      read_data(tensor, staged.data());
      source = staged.data();
    } else {
      source = data_begin() + tensor.begin;
    }
    switch (tensor.dtype) {
      case DType::f16:
        for (std::int64_t i = 0; i < count; ++i) {
          std::uint16_t half;
          std::memcpy(&half, source + 2 * i, 2);
          target[i] = detail::half_to_float(half);
        }
        break;
      case DType::bf16:
        for (std::int64_t i = 0; i < count; ++i) {
          std::uint16_t high;
          std::memcpy(&high, source + 2 * i, 2);
          target[i] = std::bit_cast<float>(static_cast<std::uint32_t>(high) << 16);
        }
        break;
      case DType::f64:
        for (std::int64_t i = 0; i < count; ++i) {
          double value;
          std::memcpy(&value, source + 8 * i, 8);
          target[i] = static_cast<float>(value);
        }
        break;
      default:
        FPN_ASSERT(false);  // F32 returned above, every other dtype was refused
    }
    return out;
  }

  // As load_float, and the shape must be `expected`.
  Tensor<float> load_float(std::string_view name, const Shape& expected) const {
    const TensorInfo& tensor = info(name);
    if (!(tensor.shape == expected)) {
      throw WeightError("safetensors: '" + source_ + "': \"" + tensor.name + "\" expected " +
                        expected.str() + ", got " + tensor.shape.str());
    }
    return load_float(name);
  }

 private:
  SafeTensors() = default;

  // The file behind open(). On POSIX systems, reads are positioned (pread), so threads loading
  // different parts of a model read at once, each copying into (and faulting in) its own tensors;
  // elsewhere a stream and a lock serialise seek + read.
  struct OpenFile {
#if FPN_SAFETENSORS_PREAD
    int fd = -1;
    OpenFile() = default;
    OpenFile(const OpenFile&) = delete;
    OpenFile& operator=(const OpenFile&) = delete;
    ~OpenFile() {
      if (fd >= 0) ::close(fd);
    }
    bool open(const std::filesystem::path& path) {
      do {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      } while (fd < 0 && errno == EINTR);
      return fd >= 0;
    }
#else
    std::ifstream stream;
    std::mutex lock;
    bool open(const std::filesystem::path& path) {
      stream.open(path, std::ios::binary);
      return static_cast<bool>(stream);
    }
#endif

    void read(std::uint64_t offset, unsigned char* target, std::uint64_t count,
              const std::string& source) {
      const auto failed = [&] {
        return IoError("safetensors: cannot read " + std::to_string(count) + " bytes at offset " +
                       std::to_string(offset) + " of '" + source +
                       "': the file ended early or could not be read (was it truncated?)");
      };
#if FPN_SAFETENSORS_PREAD
      std::uint64_t done = 0;
      while (done < count) {
        // Linux transfers at most 0x7ffff000 bytes per call; larger requests are partial reads.
        const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(count - done, 1u << 30));
        const ::ssize_t got = ::pread(fd, target + done, want, static_cast<::off_t>(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) throw failed();
        done += static_cast<std::uint64_t>(got);
      }
#else
      const std::lock_guard<std::mutex> guard(lock);
      stream.clear();
      stream.seekg(static_cast<std::streamoff>(offset));
      stream.read(reinterpret_cast<char*>(target), static_cast<std::streamsize>(count));
      if (!stream || static_cast<std::uint64_t>(stream.gcount()) != count) throw failed();
#endif
    }
  };

  // Only for parse(): open() keeps just the length field and the header in bytes_.
  const unsigned char* data_begin() const { return bytes_.data() + 8 + header_size_; }

  // The bytes of `tensor`'s data into target.
  void read_data(const TensorInfo& tensor, unsigned char* target) const {
    const std::uint64_t count = tensor.end - tensor.begin;
    if (count == 0) return;
    if (file_ != nullptr) {
      file_->read(8 + header_size_ + tensor.begin, target, count, source_);
    } else {
      std::memcpy(target, data_begin() + tensor.begin, static_cast<std::size_t>(count));
    }
  }

  const TensorInfo* find(std::string_view name) const {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : &tensors_[it->second];
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw WeightError("safetensors: '" + source_ + "': " + message);
  }

  using JsonReader = fpn::detail::JsonReader;
  using JsonKind = JsonReader::Kind;

  // A header value kept only as far as the checks need it: a scalar's text (a number's literal, a
  // string's decoded value, true/false/null), an array's item count and its first few items.
  // Keeping no more bounds the memory a hostile header costs however long its arrays are.
  struct HeaderValue {
    JsonKind kind = JsonKind::null;
    std::string text;
    std::vector<HeaderValue> items;
    std::size_t item_count = 0;
  };

  // Reads the next value, keeping at most `max_items` of an array's items (nested ones by kind).
  static HeaderValue read_value(JsonReader& reader, std::size_t max_items) {
    HeaderValue value;
    value.kind = reader.peek();
    switch (value.kind) {
      case JsonKind::null:
        reader.read_null();
        value.text = "null";
        break;
      case JsonKind::boolean:
        value.text = reader.read_boolean() ? "true" : "false";
        break;
      case JsonKind::number:
        value.text = reader.read_number();
        break;
      case JsonKind::string:
        value.text = reader.read_string();
        break;
      case JsonKind::array:
        reader.begin_array();
        while (reader.next_item()) {
          if (value.items.size() < max_items) {
            value.items.push_back(read_value(reader, 0));
          } else {
            reader.skip_value();
          }
          ++value.item_count;
        }
        break;
      case JsonKind::object:
        reader.skip_value();
        break;
    }
    return value;
  }

  // A JSON value as it appears in messages: numbers verbatim, strings quoted, containers by kind.
  static std::string describe(const HeaderValue& value) {
    std::string text;
    switch (value.kind) {
      case JsonKind::null:
      case JsonKind::boolean:
      case JsonKind::number:
        return value.text;
      case JsonKind::string:
        fpn::detail::append_json_string(text, value.text);
        return text;
      case JsonKind::array:
        return "an array";
      case JsonKind::object:
        return "an object";
    }
    return text;
  }

  static bool parse_uint(const HeaderValue& value, std::uint64_t& out) {
    if (value.kind != JsonKind::number || value.text.empty()) return false;
    std::uint64_t number = 0;
    for (char c : value.text) {
      if (c < '0' || c > '9') return false;
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (number > (UINT64_MAX - digit) / 10) return false;  // beyond uint64
      number = number * 10 + digit;
    }
    out = number;
    return true;
  }

  void index() {
    if (total_size_ < 8) {
      fail("file is " + std::to_string(total_size_) +
           " bytes, expected at least 8 (the header length)");
    }
    header_size_ = detail::read_le64(bytes_.data());
    const std::uint64_t available = total_size_ - 8;
    if (header_size_ > max_header_bytes) {
      fail("header length " + std::to_string(header_size_) + " is larger than the limit of " +
           std::to_string(max_header_bytes) + " bytes");
    }
    if (header_size_ > available) {
      fail("header length " + std::to_string(header_size_) + " exceeds the " +
           std::to_string(available) + " bytes after the length field");
    }
    const std::string_view header(reinterpret_cast<const char*>(bytes_.data()) + 8, header_size_);
    const std::string context = "safetensors: '" + source_ + "'";
    // A syntax error anywhere in the header is reported before any fault in what it says.
    JsonReader::validate(header, context);
    JsonReader reader(header, context);
    if (reader.peek() != JsonKind::object) fail("header must be a JSON object");
    const std::uint64_t data_size = available - header_size_;

    bool seen_metadata = false;
    std::string name;
    reader.begin_object();
    while (reader.next_member(name)) {
      if (name == "__metadata__") {
        // JSON leaves duplicate keys to the reader; refusing them keeps every reader in agreement.
        if (seen_metadata) fail("__metadata__ appears twice in the header");
        seen_metadata = true;
        read_metadata(reader);
      } else {
        read_tensor_entry(reader, name, data_size);
      }
    }
    check_no_overlaps();
  }

  void read_metadata(JsonReader& reader) {
    if (reader.peek() != JsonKind::object) {
      fail("__metadata__ must be an object, got " + describe(read_value(reader, 0)));
    }
    std::string key;
    reader.begin_object();
    while (reader.next_member(key)) {
      if (reader.peek() != JsonKind::string) {
        fail("__metadata__ \"" + key + "\" must be a string, got " +
             describe(read_value(reader, 0)));
      }
      if (!metadata_.emplace(key, reader.read_string()).second) {
        fail("__metadata__ \"" + key + "\" appears twice");
      }
    }
  }

  void read_tensor_entry(JsonReader& reader, const std::string& name, std::uint64_t data_size) {
    const std::string where = "tensor \"" + name + "\"";
    if (by_name_.contains(name)) fail(where + " appears twice in the header");
    if (reader.peek() != JsonKind::object) {
      fail(where + " must be an object, got " + describe(read_value(reader, 0)));
    }
    // The first of each field counts, as in a lookup by key; other fields are skipped.
    std::optional<HeaderValue> dtype;
    std::optional<HeaderValue> shape;
    std::optional<HeaderValue> offsets;
    std::string field;
    reader.begin_object();
    while (reader.next_member(field)) {
      if (field == "dtype" && !dtype) {
        dtype = read_value(reader, 0);
      } else if (field == "shape" && !shape) {
        shape = read_value(reader, Shape::max_rank);
      } else if (field == "data_offsets" && !offsets) {
        offsets = read_value(reader, 2);
      } else {
        reader.skip_value();
      }
    }
    if (!dtype) fail(where + " has no dtype");
    if (!shape) fail(where + " has no shape");
    if (!offsets) fail(where + " has no data_offsets");

    if (dtype->kind != JsonKind::string) fail(where + ": dtype must be a string");
    const DTypeInfo* type = nullptr;
    for (const auto& candidate : dtype_table) {
      if (candidate.name == dtype->text) type = &candidate;
    }
    if (type == nullptr) {
      fail(where + ": unknown dtype \"" + dtype->text +
           "\", expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    }
    if (shape->kind != JsonKind::array || shape->item_count > Shape::max_rank) {
      fail(where + ": shape must be an array of at most " + std::to_string(Shape::max_rank) +
           " non-negative integers");
    }
    std::vector<std::int64_t> dims;
    for (const HeaderValue& item : shape->items) {
      std::uint64_t dim = 0;
      if (!parse_uint(item, dim) || dim > static_cast<std::uint64_t>(INT64_MAX)) {
        fail(where + ": shape must hold non-negative integers, got " + describe(item));
      }
      dims.push_back(static_cast<std::int64_t>(dim));
    }
    std::int64_t numel = 0;
    try {
      numel = Shape::checked_numel(dims);
    } catch (const ShapeError&) {
      fail(where + ": element count of shape " + format_shape(dims) + " overflows");
    }
    if (numel > INT64_MAX / type->size) {
      fail(where + ": byte size of shape " + format_shape(dims) + " overflows");
    }
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
    if (offsets->kind != JsonKind::array || offsets->item_count != 2 ||
        !parse_uint(offsets->items[0], begin) || !parse_uint(offsets->items[1], end)) {
      fail(where + ": data_offsets must be [begin, end] of non-negative integers");
    }
    const std::string offsets_text =
        "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) fail(where + ": " + offsets_text + " begin after they end");
    if (end > data_size) {
      fail(where + ": " + offsets_text + " lie outside the data section of " +
           std::to_string(data_size) + " bytes");
    }
    const auto expected_bytes = static_cast<std::uint64_t>(numel * type->size);
    if (end - begin != expected_bytes) {
      fail(where + ": shape " + format_shape(dims) + " of " + std::string(type->name) + " needs " +
           std::to_string(expected_bytes) + " bytes, data_offsets give " +
           std::to_string(end - begin));
    }
    by_name_[name] = tensors_.size();
    tensors_.push_back({name, type->dtype, Shape(dims), begin, end});
  }

  void check_no_overlaps() const {
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const auto& tensor : tensors_) by_offset.push_back(&tensor);
    std::ranges::sort(by_offset, {}, [](const TensorInfo* t) { return std::pair(t->begin, t->end); });
    // Sorted by begin, any overlap shows up between neighbours.
    auto describe_range = [](const TensorInfo* tensor) {
      return "\"" + tensor->name + "\" [" + std::to_string(tensor->begin) + ", " +
             std::to_string(tensor->end) + "]";
    };
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
      if (by_offset[i]->begin < by_offset[i - 1]->end) {
        fail("tensors " + describe_range(by_offset[i - 1]) + " and " +
             describe_range(by_offset[i]) + " overlap in the data section");
      }
    }
  }

  std::string source_;
  std::vector<unsigned char> bytes_;  // parse(): the whole file; open(): up to the header's end
  std::uint64_t total_size_ = 0;      // the file's size
  std::unique_ptr<OpenFile> file_;    // open() only
  std::uint64_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// Serialises float tensors (stored as F32) with metadata, in the given order. Throws WeightError
// for a name that the reader would refuse: a duplicate, or the reserved "__metadata__".
inline std::string to_safetensors_bytes(
    const std::vector<std::pair<std::string, TensorView<const float>>>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  std::set<std::string_view> names;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") {
      throw WeightError("safetensors: \"__metadata__\" is reserved and cannot name a tensor");
    }
    if (!names.insert(name).second) {
      throw WeightError("safetensors: tensor \"" + name + "\" appears twice");
    }
  }
  std::string header = "{";
  bool first = true;
  auto separator = [&] {
    if (!first) header += ',';
    first = false;
  };
  if (!metadata.empty()) {
    separator();
    header += "\"__metadata__\":{";
    bool first_entry = true;
    for (const auto& [key, value] : metadata) {
      if (!first_entry) header += ',';
      first_entry = false;
      fpn::detail::append_json_string(header, key);
      header += ':';
      fpn::detail::append_json_string(header, value);
    }
    header += '}';
  }
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    separator();
    fpn::detail::append_json_string(header, name);
    header += ":{\"dtype\":\"F32\",\"shape\":" + tensor.shape().str() + ",\"data_offsets\":[" +
              std::to_string(offset) + ",";
    offset += static_cast<std::uint64_t>(tensor.numel()) * 4;
    header += std::to_string(offset) + "]}";
  }
  header += '}';
  // Pad the header with spaces so the data section starts 8-byte aligned, as the format recommends.
  while ((header.size() % 8) != 0) header += ' ';

  std::string bytes;
  bytes.reserve(8 + header.size() + offset);
  for (int i = 0; i < 8; ++i) bytes += static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  bytes += header;
  for (const auto& [name, tensor] : tensors) {
    static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
    bytes.append(reinterpret_cast<const char*>(tensor.data()),
                 static_cast<std::size_t>(tensor.numel()) * 4);
  }
  return bytes;
}

// Writes atomically: an existing file at `path` is replaced only once the new one is complete.
inline void save_safetensors(
    const std::filesystem::path& path,
    const std::vector<std::pair<std::string, TensorView<const float>>>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  write_file_atomically(path, to_safetensors_bytes(tensors, metadata));
}

}  // namespace fpn::io
