// MNN backend: .mnn models (devicelab's mnn engine writes them with MNN's converter, and int8 ones with MNN's
// quantizer) through MNN's Interpreter/Session API, on the CPU, or on Metal, OpenCL or Vulkan where the linked MNN
// has that backend. Precisions are MNN's PrecisionMode exactly as devicelab's Python mnn engine and
// tool:mnn-benchmark set them (fp32 High, fp16 Low, bf16 Low_BF16, int8 High on the quantized model).
//
// Written against MNN 3.6.1's public headers (include/MNN). No MNN C++ SDK exists on devicelab's build machines (the
// pip wheel carries no headers), so this file is built only where a user supplies MNN: see native/README.md, "MNN".
#include <MNN/Interpreter.hpp>
#include <MNN/MNNForwardType.h>
#include <MNN/Tensor.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <utility>

#include "backend.hpp"

namespace dl {
namespace {

struct Target {
    const char* backend;  // devicelab's name
    MNNForwardType type;
    const char* label;    // MNN's name, for messages
};

const Target kTargets[] = {{"cpu", MNN_FORWARD_CPU, "CPU"},
                           {"metal", MNN_FORWARD_METAL, "Metal"},
                           {"opencl", MNN_FORWARD_OPENCL, "OpenCL"},
                           {"vulkan", MNN_FORWARD_VULKAN, "Vulkan"}};

// MNN's fp16 and bf16 CPU kernels announce themselves as a CPU_EXTENSION backend; on x86 its AVX2 fp32 backend does
// too, so only an ARM build can tell from the session whether Low/Low_BF16 really left fp32.
#if defined(__aarch64__) || defined(__arm__)
constexpr bool kArmCpu = true;
#else
constexpr bool kArmCpu = false;
#endif

bool is_float32(const MNN::Tensor* t) {
    const halide_type_t type = t->getType();
    return type.code == halide_type_float && type.bits == 32;
}

class MnnBackend : public Backend {
public:
    std::string library() const override { return "mnn"; }
    std::string library_version() const override { return MNN::getVersion(); }
    std::vector<std::string> precisions() const override { return {"fp32", "fp16", "bf16", "int8"}; }
    // Every GPU name is accepted here: whether the linked MNN has that backend is known only once a session
    // exists, and then a missing one is an `unsupported` error with MNN's fallback named (load below).
    std::vector<std::string> backends() const override { return {"cpu", "metal", "opencl", "vulkan"}; }

    void load(const LoadRequest& r) override {
        const Target* target = nullptr;
        for (const Target& t : kTargets)
            if (r.backend == t.backend) target = &t;
        if (target == nullptr) throw BackendError("backend: MNN takes cpu, metal, opencl or vulkan", true);
        const bool gpu = target->type != MNN_FORWARD_CPU;
        const bool low = r.precision == "fp16" || r.precision == "bf16";
        if (gpu && r.precision == "bf16")
            throw BackendError("precision: bf16: MNN's Low_BF16 precision is a CPU mode only", false, true);
        if (gpu && r.precision == "int8")
            throw BackendError(std::string("precision: int8: devicelab's int8 .mnn (MNN's quantizer) is a CPU model: MNN's ") +
                                   target->label + " backend computes quantized models in float or not at all",
                               false, true);
        if (!gpu && low && !kArmCpu)
            throw BackendError("precision: " + r.precision + ": MNN computes " + r.precision +
                                   " on the CPU only with its ARM kernels (MNN_ARM82, MNN_SUPPORT_BF16); on this CPU "
                                   "it would run fp32",
                               false, true);

        net_.reset(MNN::Interpreter::createFromFile(r.model.c_str()));
        if (!net_) throw BackendError("MNN could not load " + r.model + " (a .mnn file from MNN's converter?)");
        // The timed session runs as MNN's own benchmark runs one: without per-op callbacks, which lets MNN plan the
        // graph for speed. layer_times() opens a second interpreter and debug session: profiling never touches the
        // timed one.
        net_->setSessionMode(MNN::Interpreter::Session_Release);

        // fp32 is High: the one mode in which every MNN backend computes fp32 (its GPU backends store and compute
        // fp16 at Normal and Low; its CPU is fp32 at Normal and High, fp16 at Low only with its ARMv8.2 kernels).
        backend_config_.precision = r.precision == "fp16"   ? MNN::BackendConfig::Precision_Low
                                    : r.precision == "bf16" ? MNN::BackendConfig::Precision_Low_BF16
                                                            : MNN::BackendConfig::Precision_High;
        // Power_High would make MNN bind its threads to the biggest cluster itself (sched_setaffinity), over the
        // CPUs dlbench pinned the process to; Power_Normal leaves the threads where the process is.
        backend_config_.power = MNN::BackendConfig::Power_Normal;
        schedule_.type = target->type;
        label_ = target->label;
        if (gpu)
            schedule_.mode = MNN_GPU_TUNING_WIDE;  // a GPU takes a mode, not a thread count: MNN's default tuning
        else
            schedule_.numThread = r.threads;
        schedule_.backendConfig = &backend_config_;
        specs_ = r.input_specs;
        session_ = open_session(*net_);

        // MNN falls back to its CPU when the asked backend is missing or fails to start, and says so only on its
        // console; the session's backend is the truth.
        int32_t used[8] = {-1, -1, -1, -1, -1, -1, -1, -1};  // one entry per pipeline; MNN asks for 1 + configs
        const MNNForwardType ran = net_->getSessionInfo(session_, MNN::Interpreter::BACKENDS, used)
                                       ? static_cast<MNNForwardType>(used[0])
                                       : target->type;
        if (gpu && ran != target->type)
            throw BackendError("backend: " + r.backend + ": this MNN build has no " + target->label +
                                   " backend, or it did not start here (MNN ran the session on forward type " +
                                   std::to_string(static_cast<int>(ran)) + " instead)",
                               false, true);
        if (!gpu && low && ran != MNN_FORWARD_CPU_EXTENSION)
            throw BackendError("precision: " + r.precision + ": this MNN build or CPU has no " + r.precision +
                                   " kernels (" + (r.precision == "fp16" ? "MNN_ARM82 and ARMv8.2 fp16 arithmetic"
                                                                         : "MNN_SUPPORT_BF16") +
                                   "): MNN would run fp32",
                               false, true);
        int threads = 0;
        if (!gpu && net_->getSessionInfo(session_, MNN::Interpreter::THREAD_NUMBER, &threads) && threads > 0 &&
            threads != r.threads)
            throw BackendError("threads: MNN runs " + std::to_string(threads) + " threads here, not " +
                                   std::to_string(r.threads),
                               false, true);

        // The model buffer is not needed again: free it, as MNN's benchmark does, so the peak memory is the
        // session's. layer_times() loads the model anew for its own interpreter, after timing and the peak read.
        net_->releaseModel();
        model_path_ = r.model;
    }

    void set_inputs(const std::vector<Tensor>& inputs) override {
        for (const Tensor& t : inputs) copy_in(*net_, session_, t);
        inputs_ = inputs;  // for the profiling session, opened later
    }

    void run() override {
        const MNN::ErrorCode code = net_->runSession(session_);
        if (code != MNN::NO_ERROR) throw BackendError("MNN runSession failed (MNN::ErrorCode " + std::to_string(code) + ")");
        // A GPU backend returns once the work is queued: wait for every output, so the clock holds the computation.
        for (const auto& o : outputs_) o.second->wait(MNN::Tensor::MAP_TENSOR_READ, true);
    }

    std::vector<Tensor> outputs() override {
        std::vector<Tensor> out;
        for (const auto& o : outputs_) {
            if (!is_float32(o.second)) throw BackendError("MNN output '" + o.first + "' is not float32");
            // A host tensor in the model's own layout (NCHW for ONNX-converted models): MNN converts from its
            // internal NC4HW4 on the copy.
            MNN::Tensor host(o.second, o.second->getDimensionType());
            if (!o.second->copyToHostTensor(&host)) throw BackendError("MNN could not copy output '" + o.first + "'");
            Tensor t;
            t.name = o.first;
            for (int d : host.shape()) t.shape.push_back(d);
            const float* p = host.host<float>();
            t.data.assign(p, p + host.elementSize());
            out.push_back(std::move(t));
        }
        return out;
    }

    std::vector<LayerTime> layer_times() override {
        if (profiled_ == nullptr) {
            // Session_Debug makes MNN call back around each op (and plan the graph without the release mode's
            // freedoms): a second interpreter and session, so the timed one stays as it was.
            profile_net_.reset(MNN::Interpreter::createFromFile(model_path_.c_str()));
            if (!profile_net_) throw BackendError("MNN could not load " + model_path_ + " again for per-layer times");
            profile_net_->setSessionMode(MNN::Interpreter::Session_Debug);
            profiled_ = open_session(*profile_net_);
        }
        for (const Tensor& t : inputs_) copy_in(*profile_net_, profiled_, t);
        using Clock = std::chrono::steady_clock;
        Clock::time_point start;
        std::vector<LayerTime> times;
        const MNN::TensorCallBackWithInfo before = [&](const std::vector<MNN::Tensor*>&, const MNN::OperatorInfo*) {
            start = Clock::now();
            return true;
        };
        const MNN::TensorCallBackWithInfo after = [&](const std::vector<MNN::Tensor*>& outs, const MNN::OperatorInfo* op) {
            for (MNN::Tensor* t : outs) t->wait(MNN::Tensor::MAP_TENSOR_READ, true);  // a GPU op is done only then
            times.push_back({op->name(), op->type(), std::chrono::duration<double>(Clock::now() - start).count()});
            return true;
        };
        const MNN::ErrorCode code = profile_net_->runSessionWithCallBackInfo(profiled_, before, after, true);
        if (code != MNN::NO_ERROR)
            throw BackendError("MNN's profiled run failed (MNN::ErrorCode " + std::to_string(code) + ")");
        return times;
    }

private:
    // Declared before net_, so destroyed after it: MNN keeps a pointer to the BackendConfig in its sessions.
    MNN::ScheduleConfig schedule_;
    MNN::BackendConfig backend_config_;
    std::unique_ptr<MNN::Interpreter, void (*)(MNN::Interpreter*)> net_{nullptr, MNN::Interpreter::destroy};
    MNN::Session* session_ = nullptr;   // owned by net_
    // Declared after net_, so destroyed before it; loaded only by layer_times().
    std::unique_ptr<MNN::Interpreter, void (*)(MNN::Interpreter*)> profile_net_{nullptr, MNN::Interpreter::destroy};
    MNN::Session* profiled_ = nullptr;  // owned by profile_net_
    std::vector<std::pair<std::string, MNN::Tensor*>> outputs_;  // the timed session's, by name
    std::vector<Tensor> specs_, inputs_;
    const char* label_ = "CPU";
    std::string model_path_;

    // A session with the config's input shapes (resized when the model's differ); the timed one also records
    // its outputs. Inputs are matched by name: MNN keeps them in a map, with no order of its own.
    MNN::Session* open_session(MNN::Interpreter& net) {
        MNN::Session* s = net.createSession(schedule_);
        if (s == nullptr) throw BackendError(std::string("MNN could not create a session on its ") + label_ + " backend");
        const std::map<std::string, MNN::Tensor*>& all = net.getSessionInputAll(s);
        if (all.size() != specs_.size())
            throw BackendError("inputs: the model has " + std::to_string(all.size()) + " inputs, the config gives " +
                                   std::to_string(specs_.size()),
                               true);
        bool resize = false;
        for (const Tensor& spec : specs_) {
            MNN::Tensor* t = input(net, s, spec.name);
            std::vector<int> dims(spec.shape.begin(), spec.shape.end());
            if (t->shape() != dims) {
                net.resizeTensor(t, dims);
                resize = true;
            }
        }
        if (resize) net.resizeSession(s);
        if (session_ == nullptr)
            for (const auto& o : net.getSessionOutputAll(s)) outputs_.emplace_back(o.first, o.second);
        if (session_ == nullptr && outputs_.empty()) throw BackendError("the MNN model declares no outputs");
        return s;
    }

    MNN::Tensor* input(MNN::Interpreter& net, MNN::Session* s, const std::string& name) {
        const std::map<std::string, MNN::Tensor*>& all = net.getSessionInputAll(s);
        auto it = all.find(name);
        if (it != all.end()) return it->second;
        std::string names;
        for (const auto& i : all) names += (names.empty() ? "" : ", ") + i.first;
        throw BackendError("inputs: the model has no input '" + name + "' (its inputs: " + names + ")", true);
    }

    void copy_in(MNN::Interpreter& net, MNN::Session* s, const Tensor& t) {
        MNN::Tensor* device = input(net, s, t.name);
        if (!is_float32(device)) throw BackendError("MNN input '" + t.name + "' is not float32 (dlbench feeds float32)");
        MNN::Tensor host(device, device->getDimensionType());  // the model's own layout, as the config's shape is
        if (static_cast<size_t>(host.elementSize()) != t.data.size())
            throw BackendError("inputs: '" + t.name + "' has " + std::to_string(t.data.size()) +
                                   " values; the model's input takes " + std::to_string(host.elementSize()),
                               true);
        std::memcpy(host.host<float>(), t.data.data(), t.data.size() * sizeof(float));
        if (!device->copyFromHostTensor(&host)) throw BackendError("MNN could not copy input '" + t.name + "'");
    }
};

}  // namespace

std::unique_ptr<Backend> make_mnn_backend() { return std::make_unique<MnnBackend>(); }

}  // namespace dl
