# Compile-fail tests, as in Eigen's failtest/: each tests/compile_fail/<case>.cpp is built twice,
# as compile_fail_<case>_ok (must compile) and compile_fail_<case> with FPN_SHOULD_FAIL defined
# (must not). The _ok twin proves that the failure comes from the FPN_SHOULD_FAIL lines and not
# from a typo elsewhere. A case may name, in a line "// error: <regex>", the message its failing
# build must print. Both stay out of `all`; the tests build them. include()d from tests/.
file(GLOB fpn_compile_fail_cases CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.cpp)

foreach(case_source IN LISTS fpn_compile_fail_cases)
  get_filename_component(case ${case_source} NAME_WE)
  # A "// error: <text>" line names the message the failing build must print (a regex).
  file(STRINGS ${case_source} expected_error REGEX "^// error: ")
  list(TRANSFORM expected_error REPLACE "^// error: " "")
  foreach(variant ok fail)
    set(target compile_fail_${case})
    if(variant STREQUAL "ok")
      string(APPEND target _ok)
    endif()
    add_library(${target} OBJECT EXCLUDE_FROM_ALL ${case_source})
    target_link_libraries(${target} PRIVATE fpn::fpn fpn_project_options)
    target_compile_options(${target} PRIVATE -Werror)
    if(variant STREQUAL "fail")
      target_compile_definitions(${target} PRIVATE FPN_SHOULD_FAIL)
    endif()
    add_test(NAME compile_fail.${case}.${variant}
      COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${target} --config $<CONFIG>)
    # These tests run the build tool in the build tree itself: one at a time.
    set_tests_properties(compile_fail.${case}.${variant} PROPERTIES
      LABELS compile_fail RESOURCE_LOCK fpn_build_tree TIMEOUT 300)
    if(variant STREQUAL "fail")
      if(expected_error)
        # The build must fail with the readable message (a failed build that does not print it
        # does not pass, nor does a successful one).
        set_tests_properties(compile_fail.${case}.${variant} PROPERTIES
          PASS_REGULAR_EXPRESSION "${expected_error}")
      else()
        set_tests_properties(compile_fail.${case}.${variant} PROPERTIES WILL_FAIL TRUE)
      endif()
    endif()
  endforeach()
endforeach()
