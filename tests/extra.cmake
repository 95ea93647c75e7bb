# Build-system tests beyond the gtest binaries, include()d from tests/CMakeLists.txt:
# header self-containedness (part of `all`), compile-fail cases and consumer projects (ctest).
include(${CMAKE_CURRENT_LIST_DIR}/headers/tests.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/compile_fail/tests.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/consumer/tests.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz.cmake)
