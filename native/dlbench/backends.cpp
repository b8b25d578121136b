// Registry of the backends compiled into this dlbench (CMake options DLBENCH_WITH_<NAME>).
#include "backend.hpp"

namespace dl {

#ifdef DLBENCH_WITH_NCNN
std::unique_ptr<Backend> make_ncnn_backend();
#endif
#ifdef DLBENCH_WITH_OPENVINO
std::unique_ptr<Backend> make_openvino_backend();
#endif
#ifdef DLBENCH_WITH_COREML
std::unique_ptr<Backend> make_coreml_backend();  // runners/ios/backend_coreml.mm: the iOS runner app only
#endif
#ifdef DLBENCH_WITH_MNN
std::unique_ptr<Backend> make_mnn_backend();  // against an MNN the user builds (MNN_ROOT); never built here
#endif
// Seams for engines built against libraries a user supplies; each one is a backend_<name>.cpp like
// backend_ncnn.cpp plus a CMake option (native/README.md, "Adding a backend").
#ifdef DLBENCH_WITH_LITERT
std::unique_ptr<Backend> make_litert_backend();
#endif
#ifdef DLBENCH_WITH_ONNXRUNTIME
std::unique_ptr<Backend> make_onnxruntime_backend();
#endif

namespace {
struct Entry {
    const char* name;
    std::unique_ptr<Backend> (*make)();
};

const std::vector<Entry>& registry() {
    static const std::vector<Entry> entries = {
#ifdef DLBENCH_WITH_NCNN
        {"ncnn", make_ncnn_backend},
#endif
#ifdef DLBENCH_WITH_OPENVINO
        {"openvino", make_openvino_backend},
#endif
#ifdef DLBENCH_WITH_COREML
        {"coreml", make_coreml_backend},
#endif
#ifdef DLBENCH_WITH_MNN
        {"mnn", make_mnn_backend},
#endif
#ifdef DLBENCH_WITH_LITERT
        {"litert", make_litert_backend},
#endif
#ifdef DLBENCH_WITH_ONNXRUNTIME
        {"onnxruntime", make_onnxruntime_backend},
#endif
    };
    return entries;
}
}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& library) {
    for (const auto& e : registry())
        if (library == e.name) return e.make();
    return nullptr;
}

std::vector<std::string> compiled_backends() {
    std::vector<std::string> names;
    for (const auto& e : registry()) names.emplace_back(e.name);
    return names;
}

}  // namespace dl
