// fpn_detect's results log (--resume FILE.jsonl) and its shards (--shard K/N), for runs over more
// images than one process should hold (not part of the fpn library).
//
// The log is JSON Lines. Its first line is the header: what makes two runs give the same results
// (the input list's fingerprint, the weights' size and hash, the architecture and the options that
// change detections) and which shard this is. Each later line is one image, appended when that
// image finishes by one write() of the whole line and made durable by fdatasync():
//   {"image_id", "file_name", "width", "height", "results": [its COCO result entries]}
//   {"image_id", "file_name", "error"}      an image that could not be read (retried on resume)
// A process killed mid-write leaves at most a last line without its newline; opening the log cuts
// it off. A log whose header differs from this run's is refused, so that results of two models or
// two input lists never mix; tools/merge_results.py checks the same headers across shards.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/cli_support.hpp"
#include "fpn/core/errors.hpp"

namespace fpn::examples {

// 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/): tells inputs and weights apart
// across runs; a fingerprint, not a defence against deliberate collisions.
class Fingerprint {
 public:
  void add(std::string_view bytes) {
    for (const unsigned char byte : bytes) {
      hash_ = (hash_ ^ byte) * 0x100000001b3ULL;
    }
  }
  std::string hex() const {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash_));
    return text;
  }

 private:
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// {"bytes": size, "fnv1a64": hash of every byte} of a file (the weights: a fine-tuned model has
// the same names and shapes as its parent, so only its bytes tell them apart).
inline nlohmann::ordered_json file_fingerprint(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  Fingerprint fingerprint;
  std::vector<char> buffer(1 << 20);
  std::uint64_t size = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    fingerprint.add({buffer.data(), got});
    size += got;
  }
  if (in.bad() || !in.eof()) throw IoError("cannot read '" + path.string() + "' to fingerprint it");
  return {{"bytes", size}, {"fnv1a64", fingerprint.hex()}};
}

// --shard K/N: the images whose index in the whole input list is K modulo N. K is 0-based, as
// Slurm's SLURM_ARRAY_TASK_ID of --array=0-(N-1). Round robin rather than contiguous blocks: in a
// sorted list, similar images (one camera, one day, one size) sit together, and dealing them out
// keeps the shards' work equal and each shard's early results spread over the whole list.
struct ShardSpec {
  std::int64_t index = 0;
  std::int64_t count = 1;

  bool contains(std::size_t image_index) const {
    return static_cast<std::int64_t>(image_index % static_cast<std::size_t>(count)) == index;
  }
  std::string str() const { return std::to_string(index) + "/" + std::to_string(count); }
};

// Throws UsageError unless `text` is K/N with 0 <= K < N (decimal digits only).
inline ShardSpec parse_shard(std::string_view text) {
  const auto number = [&](std::string_view digits, std::int64_t& value) {
    const auto end = digits.data() + digits.size();
    const auto parsed = std::from_chars(digits.data(), end, value);
    return !digits.empty() && digits.front() != '-' && parsed.ec == std::errc() &&
           parsed.ptr == end;
  };
  const std::size_t slash = text.find('/');
  ShardSpec shard;
  if (slash == std::string_view::npos || !number(text.substr(0, slash), shard.index) ||
      !number(text.substr(slash + 1), shard.count)) {
    throw UsageError("--shard '" + std::string(text) +
                     "' is not K/N (shard K of N, 0-based: 0/4, 1/4, 2/4, 3/4)");
  }
  if (shard.count < 1 || shard.index >= shard.count) {
    throw UsageError("--shard " + std::string(text) + ": K must be in 0.." +
                     (shard.count < 1 ? "N-1 with N >= 1" : std::to_string(shard.count - 1)) +
                     " (0-based: the shards of N = 4 are 0/4, 1/4, 2/4 and 3/4)");
  }
  return shard;
}

// An open, locked results log. Opening reads the lines already there; append() adds one.
class ResultsLog {
 public:
  // Called with each image line already in the log (its 2-based line number for messages).
  using OnRecord = std::function<void(const nlohmann::ordered_json& record, std::size_t line)>;

  // Creates the log with `header` as its first line, or reopens it: its header must equal
  // `header`, its complete lines must be JSON (a torn last line is cut off, with a note on
  // stderr). Throws IoError when another process holds the log, or on a mismatch or corruption.
  ResultsLog(const std::filesystem::path& path, const nlohmann::ordered_json& header,
             const OnRecord& on_record)
      : path_(path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot open it");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      close_quietly();
      throw IoError("resume file '" + path_.string() + "' is " +
                    (error == EWOULDBLOCK
                         ? "in use by another process (the same shard running twice?)"
                         : "not lockable: " + std::string(std::strerror(error))));
    }
    try {
      const std::uint64_t kept = read_existing(header, on_record);
      if (::ftruncate(fd_, static_cast<off_t>(kept)) != 0)
        fail("cannot cut off its torn last line");
      if (kept == 0) {
        append(header);
        sync_directory();
      }
    } catch (...) {
      close_quietly();
      throw;
    }
  }
  ResultsLog(const ResultsLog&) = delete;
  ResultsLog& operator=(const ResultsLog&) = delete;
  ~ResultsLog() { close_quietly(); }

  // The record as one line, written by one write() and flushed to disk before returning.
  void append(const nlohmann::ordered_json& record) {
    const std::string line = record.dump() + "\n";
    const off_t before = ::lseek(fd_, 0, SEEK_END);
    const ssize_t written = ::write(fd_, line.data(), line.size());
    if (written != static_cast<ssize_t>(line.size())) {
      const std::string reason = written < 0 ? std::strerror(errno) : "short write (disk full?)";
      if (before >= 0 && ::ftruncate(fd_, before) != 0) {
        // The torn line stays; the next open cuts it off.
      }
      throw IoError("cannot append to resume file '" + path_.string() + "': " + reason);
    }
    if (::fdatasync(fd_) != 0) fail("cannot flush it to disk");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw IoError("resume file '" + path_.string() + "': " + what + ": " + std::strerror(errno));
  }

  void close_quietly() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // A new file's name must survive a crash too.
  void sync_directory() const {
    const std::filesystem::path directory = path_.has_parent_path() ? path_.parent_path() : ".";
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }

  // Returns the bytes to keep: up to the end of the last complete line (0 for an empty log, or
  // one whose header line itself was torn).
  std::uint64_t read_existing(const nlohmann::ordered_json& header, const OnRecord& on_record) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) fail("cannot read it");
    std::uint64_t kept = 0;
    std::size_t number = 0;
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) {  // no newline after it: a write cut short by a kill
        std::fprintf(stderr,
                     "fpn_detect: resume file '%s': cut off its torn last line (%zu bytes)\n",
                     path_.c_str(), line.size());
        break;
      }
      ++number;
      nlohmann::ordered_json record;
      try {
        record = nlohmann::ordered_json::parse(line);
      } catch (const nlohmann::json::exception& error) {
        throw IoError("resume file '" + path_.string() + "' line " + std::to_string(number) +
                      " is not JSON (" + error.what() + "); it is not a log fpn_detect wrote");
      }
      if (number == 1) {
        check_header(record, header);
      } else {
        on_record(record, number);
      }
      kept += line.size() + 1;
    }
    if (in.bad()) fail("cannot read it");
    return kept;
  }

  void check_header(const nlohmann::ordered_json& found,
                    const nlohmann::ordered_json& expected) const {
    const std::string where = "resume file '" + path_.string() + "'";
    if (!found.is_object() || !found.contains("format") || found["format"] != expected["format"]) {
      throw IoError(where + " is not an fpn_detect results log (its first line is not a " +
                    expected["format"].dump() + " header)");
    }
    for (const auto& [key, value] : expected.items()) {
      if (found.contains(key) && found[key] == value) continue;
      throw IoError(where + " was written by another run: its \"" + key + "\" is " +
                    (found.contains(key) ? found[key].dump() : "missing") + ", this run's is " +
                    value.dump() +
                    "; resume with the same inputs, weights, options and --shard, "
                    "or give a new file");
    }
  }

  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace fpn::examples
