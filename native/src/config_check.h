// Budget checks on a model config before anything is allocated (issue 20): every dimension in
// range, eps and rope theta positive, weight files regular, and the parameter total no larger than
// the weight files can hold (2 bytes per parameter at least). The TypeScript loader checks the
// same with config.json's field names (src/engine/config-check.ts); this guards direct callers.
#pragma once
#include <string>
#include <vector>

#include "model.h"

namespace vq {

// Throws vq::Error naming the field or file; returns the parameter count.
int64_t check_model_config(const ModelConfig& cfg, const std::vector<std::string>& files, int max_seq);

}  // namespace vq
