# Fuzz targets for the readers of untrusted files: tests/fuzz/fuzz_<name>.cpp defines
# LLVMFuzzerTestOneInput, and tests/fuzz/corpus/<name>/ holds its committed seeds
# (tools/make_fuzz_corpus.py makes them). include()d from tests/extra.cmake.
#
# Under Clang with libFuzzer, fuzz_<name> is a libFuzzer binary with AddressSanitizer and
# UndefinedBehaviorSanitizer, every report fatal; tools/run_fuzzers.sh builds these in build-fuzz/
# and fuzzes for a bounded time. Otherwise (GCC, the normal build), fuzz_<name> is the same code
# with standalone_driver.cpp as main().
# Either way the ctest fuzz_replay_<name> runs every seed once, so that each seed, and each crash
# once fixed and added to the corpus, is a regression test of every build.
set(fpn_fuzz_dir ${CMAKE_CURRENT_LIST_DIR})

# libFuzzer when the compiler links it (not every Clang ships its runtime, AppleClang has none).
set(fpn_fuzz_sanitizers -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  include(CheckCXXSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer,address,undefined")
  set(CMAKE_REQUIRED_LINK_OPTIONS ${fpn_fuzz_sanitizers})
  check_cxx_source_compiles(
    "extern \"C\" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }"
    FPN_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
endif()
if(FPN_HAVE_LIBFUZZER)
  set(fpn_fuzz_with_libfuzzer ON)
  message(STATUS "fpn fuzz targets: libFuzzer with ASan and UBSan")
else()
  set(fpn_fuzz_with_libfuzzer OFF)
  message(STATUS "fpn fuzz targets: corpus replay only (no libFuzzer)")
endif()

# fpn_add_fuzz_target(NAME <name> [INCLUDES <dirs...>] [SOURCES <files...>] [LIBRARIES <libs...>]):
# SOURCES are compiled into the target with its sanitizers and coverage.
function(fpn_add_fuzz_target)
  cmake_parse_arguments(ARG "" "NAME" "INCLUDES;SOURCES;LIBRARIES" ${ARGN})
  set(target fuzz_${ARG_NAME})
  set(corpus ${fpn_fuzz_dir}/corpus/${ARG_NAME})
  if(fpn_fuzz_with_libfuzzer)
    add_executable(${target} ${fpn_fuzz_dir}/${target}.cpp ${ARG_SOURCES})
    target_compile_options(${target} PRIVATE ${fpn_fuzz_sanitizers} -fno-omit-frame-pointer -g)
    target_link_options(${target} PRIVATE ${fpn_fuzz_sanitizers})
    # Given files, a libFuzzer binary runs each once and exits: it never fuzzes or writes here.
    file(GLOB seeds CONFIGURE_DEPENDS ${corpus}/*)
    add_test(NAME fuzz_replay_${ARG_NAME} COMMAND ${target} ${seeds})
  else()
    add_executable(${target} ${fpn_fuzz_dir}/${target}.cpp ${fpn_fuzz_dir}/standalone_driver.cpp
      ${ARG_SOURCES})
    add_test(NAME fuzz_replay_${ARG_NAME} COMMAND ${target} ${corpus})
  endif()
  target_link_libraries(${target} PRIVATE fpn::fpn fpn_project_options ${ARG_LIBRARIES})
  target_include_directories(${target} PRIVATE ${ARG_INCLUDES})
  target_compile_options(${target} PRIVATE -Werror)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # As for the gtest binaries (tests/CMakeLists.txt): GCC 12's own AVX-512 headers may warn.
    target_compile_options(${target} PRIVATE -Wno-error=maybe-uninitialized)
  endif()
  set_tests_properties(fuzz_replay_${ARG_NAME} PROPERTIES LABELS fuzz TIMEOUT 300)
endfunction()

fpn_add_fuzz_target(NAME safetensors)
# The example programs' image loader: examples/common/image_io.hpp and its decoders over
# libjpeg-turbo and libpng (found in tests/CMakeLists.txt; those libraries themselves are Debian's,
# not instrumented).
fpn_add_fuzz_target(NAME image INCLUDES ${PROJECT_SOURCE_DIR}/examples
  SOURCES ${PROJECT_SOURCE_DIR}/examples/common/image_decoders.cpp
  LIBRARIES JPEG::JPEG PNG::PNG)
