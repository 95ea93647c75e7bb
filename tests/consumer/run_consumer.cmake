# Builds and runs tests/consumer against fpn, failing on the first step that fails.
#
#   cmake -DMODE=find_package|subdirectory -DFPN_SOURCE_DIR=<checkout> -DWORK_DIR=<scratch dir>
#         [-DFPN_BINARY_DIR=<configured fpn build tree, find_package mode>]
#         [-DFPN_VERSION=<x.y.z>] [-DCONFIG=<build type>]
#         [-DGENERATOR=<cmake generator>] [-DCXX_COMPILER=<path>] [-DCXX_LAUNCHER=<ccache>]
#         -P run_consumer.cmake
#
# find_package mode installs FPN_BINARY_DIR into WORK_DIR/prefix first and checks what landed
# there; subdirectory mode hands FPN_SOURCE_DIR to the consumer's add_subdirectory.
cmake_minimum_required(VERSION 3.20)

foreach(required MODE FPN_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${required})
    message(FATAL_ERROR "run_consumer: -D${required}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

# run(<args...>): runs one command, echoing it, and stops the script if it fails.
function(run)
  execute_process(COMMAND ${ARGN} COMMAND_ECHO STDOUT RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "run_consumer: failed (${result}): ${command}")
  endif()
endfunction()

set(consumer_args -DCMAKE_BUILD_TYPE=${CONFIG})
if(GENERATOR)
  list(APPEND consumer_args -G ${GENERATOR})
endif()
if(CXX_COMPILER)
  list(APPEND consumer_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
if(CXX_LAUNCHER)
  list(APPEND consumer_args -DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_LAUNCHER})
endif()
if(FPN_VERSION)
  list(APPEND consumer_args -DFPN_EXPECTED_VERSION=${FPN_VERSION})
endif()

set(consumer_build ${WORK_DIR}/build-${MODE})
# Start from nothing, so that a file left by an earlier run can't make this one pass.
file(REMOVE_RECURSE ${consumer_build})

if(MODE STREQUAL "find_package")
  if(NOT DEFINED FPN_BINARY_DIR)
    message(FATAL_ERROR "run_consumer: find_package mode needs -DFPN_BINARY_DIR=<fpn build tree>")
  endif()
  set(prefix ${WORK_DIR}/prefix)
  file(REMOVE_RECURSE ${prefix})
  run(${CMAKE_COMMAND} --install ${FPN_BINARY_DIR} --prefix ${prefix} --config ${CONFIG})

  # The package files where find_package looks for them, and every public header.
  set(package_dir ${prefix}/share/cmake/fpn)
  foreach(file fpnConfig.cmake fpnConfigVersion.cmake fpnTargets.cmake)
    if(NOT EXISTS ${package_dir}/${file})
      message(FATAL_ERROR "run_consumer: install did not write ${package_dir}/${file}")
    endif()
  endforeach()
  file(GLOB_RECURSE headers RELATIVE ${FPN_SOURCE_DIR}/include ${FPN_SOURCE_DIR}/include/*.hpp)
  if(NOT headers)
    message(FATAL_ERROR "run_consumer: found no headers under ${FPN_SOURCE_DIR}/include")
  endif()
  foreach(header IN LISTS headers)
    if(NOT EXISTS ${prefix}/include/${header})
      message(FATAL_ERROR "run_consumer: install did not write ${prefix}/include/${header}")
    endif()
  endforeach()
  list(LENGTH headers header_count)
  message(STATUS "run_consumer: ${prefix} has the package files and all ${header_count} headers")

  # With the example programs, fpn_detect finds its bundled demo model in <prefix>/share/fpn.
  if(EXISTS ${prefix}/bin/fpn_detect)
    if(NOT EXISTS ${prefix}/share/fpn/demo_shapes_maskrcnn.safetensors)
      message(FATAL_ERROR "run_consumer: install did not write the demo model to ${prefix}/share/fpn")
    endif()
    run(${prefix}/bin/fpn_detect --json ${WORK_DIR}/installed_demo.json
        ${FPN_SOURCE_DIR}/examples/data/shapes_scene.png)
    if(NOT EXISTS ${WORK_DIR}/installed_demo.json)
      message(FATAL_ERROR "run_consumer: the installed fpn_detect wrote no JSON")
    endif()
  endif()

  list(APPEND consumer_args -DFPN_CONSUMER_MODE=find_package -DCMAKE_PREFIX_PATH=${prefix}
       -DFPN_EXPECTED_DIR=${package_dir} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
elseif(MODE STREQUAL "subdirectory")
  list(APPEND consumer_args -DFPN_CONSUMER_MODE=subdirectory -DFPN_SOURCE_DIR=${FPN_SOURCE_DIR})
else()
  message(FATAL_ERROR "run_consumer: MODE must be find_package or subdirectory, got '${MODE}'")
endif()

run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR} -B ${consumer_build} ${consumer_args})
run(${CMAKE_COMMAND} --build ${consumer_build} --config ${CONFIG})
# The build directory's apps, wherever a multi-config generator put them: the plain one (no
# flags: must run multi-threaded anyway) and the fpn::native one.
foreach(name app app_native)
  file(GLOB_RECURSE apps ${consumer_build}/${name} ${consumer_build}/${name}.exe)
  if(NOT apps)
    message(FATAL_ERROR "run_consumer: no ${name} was built in ${consumer_build}")
  endif()
  list(GET apps 0 app)
  run(${app})
endforeach()
