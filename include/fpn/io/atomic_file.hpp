// Writes a file so that readers see either the old file or the complete new one, never half of it:
// the bytes go to a temporary file beside the target, which is renamed over it only on success.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>

#include "fpn/core/errors.hpp"

namespace fpn::io {

// Throws IoError naming the path when the directory is missing or unwritable or the write fails;
// the target is then left exactly as it was.
inline void write_file_atomically(const std::filesystem::path& target, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    throw IoError("cannot write '" + target.string() + "': directory '" + directory.string() +
                  "' does not exist");
  }
  std::random_device entropy;
  const fs::path temporary =
      directory / ("." + target.filename().string() + ".tmp" + std::to_string(entropy()));
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw IoError("cannot write '" + target.string() + "': cannot create a file in '" +
                    directory.string() + "'");
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      out.close();
      fs::remove(temporary, error);
      throw IoError("cannot write '" + target.string() + "': write failed (disk full?)");
    }
  }
  fs::rename(temporary, target, error);
  if (error) {
    fs::remove(temporary, error);
    throw IoError("cannot write '" + target.string() + "': rename from temporary file failed");
  }
}

}  // namespace fpn::io
