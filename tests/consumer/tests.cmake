# Consumer tests: a separate project uses fpn as a user would, through an installed package
# (find_package) and through the source tree (add_subdirectory). include()d from tests/.
set(fpn_consumer_common
  -DFPN_SOURCE_DIR=${PROJECT_SOURCE_DIR}
  -DWORK_DIR=${CMAKE_BINARY_DIR}/consumer
  -DFPN_VERSION=${PROJECT_VERSION}
  -DCONFIG=$<CONFIG>
  "-DGENERATOR=${CMAKE_GENERATOR}"
  -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
  "-DCXX_LAUNCHER=${CMAKE_CXX_COMPILER_LAUNCHER}"
  -P ${CMAKE_CURRENT_LIST_DIR}/run_consumer.cmake)

# Installs this build tree into ${CMAKE_BINARY_DIR}/consumer/prefix, then builds against it.
if(FPN_INSTALL)
  add_test(NAME consumer.find_package
    COMMAND ${CMAKE_COMMAND} -DMODE=find_package -DFPN_BINARY_DIR=${CMAKE_BINARY_DIR}
            ${fpn_consumer_common})
  set_tests_properties(consumer.find_package PROPERTIES LABELS consumer TIMEOUT 900)
endif()

add_test(NAME consumer.add_subdirectory
  COMMAND ${CMAKE_COMMAND} -DMODE=subdirectory ${fpn_consumer_common})
set_tests_properties(consumer.add_subdirectory PROPERTIES LABELS consumer TIMEOUT 900)
