// The backend seam: everything dlbench needs from an engine library. main.cpp owns the protocol, the clock,
// the warmup, inputs and outputs, so every backend is timed the same way; a backend only loads a model,
// takes inputs, runs one inference and hands outputs back.
//
// Adding an engine (MNN, LiteRT, ONNX Runtime, OpenVINO...): one backend_<name>.cpp implementing Backend, a
// factory registered in backends.cpp under #ifdef DLBENCH_WITH_<NAME>, and a CMake option that finds the
// library the user supplies (see native/README.md). Nothing else changes.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "json.hpp"

namespace dl {

// A failure the controller should see as {"event":"error"}; `bad_input` marks the config's fault (exit 2);
// `unsupported`: the engine cannot do this config on this device (the event says so: an `unsupported` row).
struct BackendError : std::runtime_error {
    BackendError(const std::string& what, bool bad_input = false, bool unsupported = false)
        : std::runtime_error(what), bad_input(bad_input), unsupported(unsupported) {}
    bool bad_input;
    bool unsupported;
};

// A dense float32 tensor in C order (NCHW for images), as numpy writes and reads it.
struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;
};

// One layer's time from a profiled inference (after the timed ones, never during them).
struct LayerTime {
    std::string name;
    std::string type;
    double seconds;
};

// What main.cpp hands a backend: the runner config, already validated for the common fields.
// Relative paths in a config are relative to the config file's folder.
inline std::string resolve(const std::string& base_dir, const std::string& path) {
    if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
    return base_dir + "/" + path;
}

struct LoadRequest {
    std::string model;        // path of the model file (engine format), resolved
    std::string base_dir;     // the config file's folder: resolve other paths in options against it
    const Json* options;      // the config's "options" object (engine-specific keys, e.g. ncnn "weights")
    int threads;              // >= 1
    std::string precision;    // fp32 (every lower-precision switch off), fp16, bf16, int8
    std::string backend;      // cpu, vulkan, coreml-ane, ...
    std::vector<Tensor> input_specs;  // names and shapes (data empty)
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string library() const = 0;          // "ncnn"
    virtual std::string library_version() const = 0;  // the linked library's own version string
    // Allowed values, for one-line errors naming them.
    virtual std::vector<std::string> precisions() const = 0;
    virtual std::vector<std::string> backends() const = 0;

    virtual void load(const LoadRequest& request) = 0;
    // Called once before the first run; inputs stay fixed for every timed iteration.
    virtual void set_inputs(const std::vector<Tensor>& inputs) = 0;
    // One inference; timed by the caller.
    virtual void run() = 0;
    // The outputs of the last run(), as float32 C-order tensors.
    virtual std::vector<Tensor> outputs() = 0;
    // One profiled inference, layer by layer; empty when the engine offers no per-layer times.
    virtual std::vector<LayerTime> layer_times() { return {}; }
};

// The backends compiled into this binary, by library name ("ncnn"); nullptr when unknown or not compiled in.
std::unique_ptr<Backend> make_backend(const std::string& library);
std::vector<std::string> compiled_backends();

}  // namespace dl
