# End-to-end tests of the example programs (examples/fpn_detect, fpn_features, fpn_segments), include()d
# from tests/CMakeLists.txt. tests/app/test_cli.py runs the built programs on the detector
# fixture's seeded weights and compares their outputs with torchvision's, which
# tools/fixtures/cli.py computes from those same weights.
if(FPN_BUILD_EXAMPLES)
  # cli.py reads the detector fixture's det_model_*.safetensors, so it runs after that step.
  add_test(NAME fixture_cli
    COMMAND ${FPN_PYTHON} ${PROJECT_SOURCE_DIR}/tools/fixtures/cli.py --out ${FPN_FIXTURE_DIR})
  set_tests_properties(fixture_cli PROPERTIES
    FIXTURES_SETUP cli_fixture FIXTURES_REQUIRED fixtures_test_models)
  # The JPEG case: PIL's JPEG of the same image and torchvision's features on PIL's decode.
  add_test(NAME fixture_cli_jpeg
    COMMAND ${FPN_PYTHON} ${PROJECT_SOURCE_DIR}/tools/fixtures/cli_jpeg.py --out ${FPN_FIXTURE_DIR})
  set_tests_properties(fixture_cli_jpeg PROPERTIES
    FIXTURES_SETUP cli_fixture FIXTURES_REQUIRED fixtures_test_models)

  # The example targets are defined after tests/ is processed; generator expressions resolve late.
  add_test(NAME examples_cli
    COMMAND ${FPN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_cli.py
      --detect $<TARGET_FILE:fpn_detect> --features $<TARGET_FILE:fpn_features>
      --fixtures ${FPN_FIXTURE_DIR})
  set_tests_properties(examples_cli PROPERTIES
    FIXTURES_REQUIRED "fixtures_test_models;cli_fixture" TIMEOUT 900
    RESOURCE_LOCK ${FPN_CORES_LOCK})

  # fpn_segments on a held-out scene against the seed's PyTorch reference (tools/fixtures/seed.py).
  add_test(NAME examples_segments
    COMMAND ${FPN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_segments_cli.py
      --segments $<TARGET_FILE:fpn_segments> --fixtures ${FPN_FIXTURE_DIR})
  set_tests_properties(examples_segments PROPERTIES
    FIXTURES_REQUIRED fixtures_test_models TIMEOUT 300 RESOURCE_LOCK ${FPN_CORES_LOCK})

  # Folder runs in pieces (tests/app/test_shards.py): --shard, --resume after SIGKILL and
  # tools/merge_results.py against one uninterrupted run, on the demo model and generated scenes.
  add_test(NAME examples_shards
    COMMAND ${FPN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_shards.py --detect $<TARGET_FILE:fpn_detect>
      ShardSpecs Shards MergeRefusals KillAndResume)
  set_tests_properties(examples_shards PROPERTIES TIMEOUT 600 RESOURCE_LOCK ${FPN_CORES_LOCK})
  # examples/slurm/submit.sh on a single-node Slurm (munged, slurmctld, slurmd) that the test
  # starts on localhost and stops: a 4-task array job and the merge job after it.
  add_test(NAME examples_slurm
    COMMAND ${FPN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_shards.py --detect $<TARGET_FILE:fpn_detect>
      Slurm)
  set_tests_properties(examples_slurm PROPERTIES TIMEOUT 600 RESOURCE_LOCK ${FPN_CORES_LOCK})

  # The README's library example runs on a seeded Mask R-CNN R50 and prints its detections.
  add_test(NAME examples_detect_minimal
    COMMAND detect_minimal ${FPN_FIXTURE_DIR}/det_model_maskrcnn_resnet50_fpn.safetensors
      ${FPN_FIXTURE_DIR}/cli_image.png)
  set_tests_properties(examples_detect_minimal PROPERTIES
    FIXTURES_REQUIRED "fixtures_test_models;cli_fixture" RESOURCE_LOCK ${FPN_CORES_LOCK}
    PASS_REGULAR_EXPRESSION "label +[0-9]+  score 0\\.[0-9]+  box \\[.*mask area [0-9]+")
endif()
