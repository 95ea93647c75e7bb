// fpn: Feature Pyramid Network object detection on the CPU. The umbrella header.
#pragma once

#include "fpn/core/errors.hpp"
#include "fpn/core/shape.hpp"
#include "fpn/core/tensor.hpp"
#include "fpn/io/atomic_file.hpp"
#include "fpn/io/safetensors.hpp"
