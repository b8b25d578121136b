// OpenVINO backend (CPU plugin): reads .onnx (and .xml, .tflite) directly. Built against the headers and
// OpenVINOConfig.cmake that the openvino wheel ships (devicelab build-native --target host --with openvino).
#include <openvino/openvino.hpp>

#include "backend.hpp"

namespace dl {
namespace {

class OpenVinoBackend : public Backend {
public:
    std::string library() const override { return "openvino"; }
    std::string library_version() const override { return ov::get_openvino_version().buildNumber; }
    std::vector<std::string> precisions() const override { return {"fp32", "fp16", "bf16"}; }
    std::vector<std::string> backends() const override { return {"cpu"}; }

    void load(const LoadRequest& r) override {
        try {
            model_ = core_.read_model(r.model);
        } catch (const std::exception& e) {
            throw BackendError("OpenVINO could not read " + r.model + ": " + first_line(e.what()));
        }
        if (model_->inputs().size() != r.input_specs.size())
            throw BackendError("inputs: the model has " + std::to_string(model_->inputs().size()) +
                                   " inputs, the config gives " + std::to_string(r.input_specs.size()),
                               true);
        // fp32 must mean fp32: the CPU plugin otherwise picks bf16 (or fp16) where the CPU has it.
        const ov::element::Type type = r.precision == "bf16"   ? ov::element::bf16
                                       : r.precision == "fp16" ? ov::element::f16
                                                               : ov::element::f32;
        config_ = {ov::inference_num_threads(r.threads), ov::hint::inference_precision(type),
                   ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::hint::num_requests(1),
                   // dlbench pinned the process already; the plugin must not re-pin its threads elsewhere
                   ov::hint::enable_cpu_pinning(false)};
        compiled_ = compile(config_);
        request_ = compiled_.create_infer_request();
    }

    void set_inputs(const std::vector<Tensor>& inputs) override {
        inputs_ = inputs;  // the tensors below point into this copy, which lives as long as the backend
        for (size_t i = 0; i < inputs_.size(); i++) {
            ov::Shape shape(inputs_[i].shape.begin(), inputs_[i].shape.end());
            request_.set_input_tensor(i, ov::Tensor(ov::element::f32, shape, inputs_[i].data.data()));
        }
    }

    void run() override { request_.infer(); }

    std::vector<Tensor> outputs() override {
        std::vector<Tensor> out;
        for (size_t i = 0; i < compiled_.outputs().size(); i++) {
            ov::Tensor t = request_.get_output_tensor(i);
            if (t.get_element_type() != ov::element::f32) throw BackendError("OpenVINO output is not float32");
            Tensor o;
            o.name = compiled_.output(i).get_any_name();
            for (size_t d : t.get_shape()) o.shape.push_back(static_cast<int64_t>(d));
            const float* p = t.data<const float>();
            o.data.assign(p, p + t.get_size());
            out.push_back(std::move(o));
        }
        return out;
    }

    std::vector<LayerTime> layer_times() override {
        // A second compiled model with performance counters: profiling never touches the timed one.
        if (!profiled_) {
            ov::AnyMap config = config_;
            config[ov::enable_profiling.name()] = true;
            profiled_model_ = compile(config);
            profiled_request_ = profiled_model_.create_infer_request();
            profiled_ = true;
        }
        for (size_t i = 0; i < inputs_.size(); i++)
            profiled_request_.set_input_tensor(i, request_.get_input_tensor(i));
        profiled_request_.infer();
        std::vector<LayerTime> times;
        for (const ov::ProfilingInfo& info : profiled_request_.get_profiling_info())
            if (info.status == ov::ProfilingInfo::Status::EXECUTED)
                times.push_back({info.node_name, info.node_type, info.real_time.count() * 1e-6});
        return times;
    }

private:
    ov::Core core_;
    std::shared_ptr<ov::Model> model_;
    ov::AnyMap config_;
    ov::CompiledModel compiled_, profiled_model_;
    ov::InferRequest request_, profiled_request_;
    std::vector<Tensor> inputs_;
    bool profiled_ = false;

    ov::CompiledModel compile(const ov::AnyMap& config) {
        try {
            return core_.compile_model(model_, "CPU", config);
        } catch (const std::exception& e) {
            throw BackendError("OpenVINO could not compile the model for CPU: " + first_line(e.what()));
        }
    }

    static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
};

}  // namespace

std::unique_ptr<Backend> make_openvino_backend() { return std::make_unique<OpenVinoBackend>(); }

}  // namespace dl
