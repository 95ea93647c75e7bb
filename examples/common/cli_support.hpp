// What the example programs share around their command lines (not part of the fpn library):
// checks of input and output paths made before any heavy work, and one policy for failures --
// exit 2 for a usage error (CLI11's message and a pointer to --help), exit 1 with the message for
// anything that goes wrong while running, never an uncaught exception.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include "fpn/core/build_info.hpp"
#include "fpn/core/errors.hpp"
#include "fpn/core/thread_pool.hpp"

namespace fpn::examples {

inline constexpr int exit_failure = 1;
inline constexpr int exit_usage = 2;

// A command line that parses but does not make sense (options that exclude each other, say):
// reported like CLI11's own errors, with exit_usage.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws IoError unless `path` is an existing regular file; `what` names it ("weights file").
inline void check_input_file(const std::filesystem::path& path, std::string_view what) {
  std::error_code error;
  if (!std::filesystem::exists(path, error)) {
    throw IoError(std::string(what) + " '" + path.string() + "' does not exist");
  }
  if (!std::filesystem::is_regular_file(path, error)) {
    throw IoError(std::string(what) + " '" + path.string() + "' is not a regular file");
  }
}

// Throws IoError unless `path` can be written: its directory exists and it is not a directory.
// The file itself is written later, atomically; this only fails early and cheaply.
inline void check_output_file(const std::filesystem::path& path, std::string_view what) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path directory = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (!fs::is_directory(directory, error)) {
    throw IoError("cannot write " + std::string(what) + " '" + path.string() + "': directory '" +
                  directory.string() + "' does not exist");
  }
  if (fs::is_directory(path, error)) {
    throw IoError("cannot write " + std::string(what) + " '" + path.string() +
                  "': it is a directory");
  }
}

// The options every example program has for its input image: --min-size and --max-size as
// torchvision's GeneralizedRCNNTransform takes them, and the positional IMAGE.
inline void add_image_options(CLI::App& app, std::int64_t& min_size, std::int64_t& max_size,
                              std::filesystem::path& image) {
  app.add_option("--min-size", min_size,
                 "resize so that the short side is this many pixels (torchvision's min_size)...")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-size", max_size,
                 "...unless the long side would exceed this (torchvision's max_size)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("IMAGE", image,
                 "the image: PNG, JPEG or binary PNM, decoded to 8-bit RGB as PIL's "
                 "Image.open(path).convert(\"RGB\") does")
      ->required();
}

// What every example program takes for running fpn itself: --threads (applied to the whole run by
// run_command_line) and --version (fpn's build_info: SIMD level compiled in and offered, threads).
struct RuntimeOptions {
  int threads = 0;  // 0: one per available CPU
};
inline RuntimeOptions& runtime_options() {
  static RuntimeOptions options;
  return options;
}
inline void add_runtime_options(CLI::App& app) {
  app.add_option("--threads", runtime_options().threads,
                 "threads to run on (0: one per CPU this process may use)")
      ->check(CLI::Range(0, fpn::max_threads))
      ->capture_default_str();
  app.set_version_flag("--version", [] { return fpn::build_info().str(); },
                       "print fpn's version, the SIMD level it was built for, the CPU's best and "
                       "the default thread count, and exit");
}

// Says once, on stderr, when the program was built for less than this CPU offers.
inline void note_build_below_cpu(const std::string& program) {
  const fpn::BuildInfo info = fpn::build_info();
  if (!info.below_cpu()) return;
  std::cerr << program << ": note: built for " << fpn::to_string(info.compiled)
            << ", but this CPU offers " << fpn::to_string(info.cpu)
            << "; a build with fpn::native (-march=native) runs several times faster\n";
}

// Parses the command line into `app`'s options, then calls run(), which returns the exit status
// (or nothing, for 0). Returns the exit status: 0 on success (or --help), exit_usage for a
// command-line error (a CLI11 error or a UsageError), exit_failure when run() throws otherwise.
// Every message goes to stderr prefixed with the program's name.
template <typename Run>
int run_command_line(CLI::App& app, int argc, char** argv, const Run& run) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // Prints --help to stdout, errors to stderr; CLI11's own codes (100 and up) become the usual
    // usage-error status.
    return app.exit(error) == 0 ? 0 : exit_usage;
  }
  const std::string program = app.get_name();
  try {
    note_build_below_cpu(program);
    const fpn::ThreadLimit limit(runtime_options().threads);
    if constexpr (std::is_void_v<decltype(run())>) {
      run();
      return 0;
    } else {
      return run();
    }
  } catch (const UsageError& error) {
    std::cerr << program << ": " << error.what() << "\nRun with --help for more information.\n";
    return exit_usage;
  } catch (const fpn::Error& error) {
    std::cerr << program << ": " << error.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": out of memory\n";
  } catch (const std::exception& error) {
    std::cerr << program << ": unexpected error: " << error.what() << "\n";
  }
  return exit_failure;
}

// The help text's closing lines, the same for every example program.
inline constexpr std::string_view exit_status_help =
    "Exit status: 0 on success, 1 if a file cannot be read or written or the weights do not fit\n"
    "the architecture (the message says which), 2 for a command-line error. Output files are\n"
    "written atomically: a failed run leaves existing files as they were.";

}  // namespace fpn::examples
