// ncnn backend: .param/.bin models (devicelab converts ONNX with pnnx), CPU. Options are set exactly as
// devicelab's Python ncnn engine sets them, so the two differ only in the harness around them.
// `backend: vulkan` exists only when the linked ncnn was built with NCNN_VULKAN=ON (the iOS runner app's ncnn,
// against MoltenVK); devicelab's own builds are CPU-only, so that branch is not compiled or tested here.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "backend.hpp"
#include "net.h"
#include "platform.h"
#if NCNN_VULKAN
#include "gpu.h"
#endif

namespace dl {
namespace {

class NcnnBackend : public Backend {
public:
    std::string library() const override { return "ncnn"; }
    std::string library_version() const override {
#ifdef NCNN_VERSION_STRING
        return NCNN_VERSION_STRING;
#else
        return "unknown";
#endif
    }
    std::vector<std::string> precisions() const override { return {"fp32", "fp16", "bf16", "int8"}; }
    std::vector<std::string> backends() const override {
#if NCNN_VULKAN
        return {"cpu", "vulkan"};
#else
        return {"cpu"};
#endif
    }

    void load(const LoadRequest& r) override {
        ncnn::Option& opt = net_.opt;
        // Before load: ncnn turns fp16 (and int8) on by default; fp32 must mean every switch off.
        const bool fp16 = r.precision == "fp16", bf16 = r.precision == "bf16", int8 = r.precision == "int8";
        opt.num_threads = r.threads;
#if NCNN_VULKAN
        opt.use_vulkan_compute = r.backend == "vulkan";
        if (opt.use_vulkan_compute && ncnn::get_gpu_count() == 0)
            throw BackendError("backend: vulkan: ncnn finds no Vulkan device here (on iOS it needs MoltenVK linked in)",
                               false, true);
#else
        opt.use_vulkan_compute = false;
#endif
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16;
        opt.use_bf16_storage = opt.use_bf16_packed = bf16;
        // int8 runs a model quantized with ncnn2int8; the other int8 switches are Vulkan-only.
        opt.use_int8_inference = int8;
        opt.use_int8_storage = opt.use_int8_packed = opt.use_int8_arithmetic = false;

        std::string weights;
        const Json& w = (*r.options)["weights"];
        if (w.is_string()) {
            weights = resolve(r.base_dir, w.as_string());
        } else {
            weights = r.model;
            const std::string ext = ".param";
            if (weights.size() > ext.size() && weights.compare(weights.size() - ext.size(), ext.size(), ext) == 0)
                weights.replace(weights.size() - ext.size(), ext.size(), ".bin");
            else
                throw BackendError("options.weights: give the .bin file (the model is not a .param file)", true);
        }
        if (net_.load_param(r.model.c_str()) != 0) throw BackendError("ncnn could not load " + r.model);
        if (net_.load_model(weights.c_str()) != 0) throw BackendError("ncnn could not load " + weights);

        for (const char* name : net_.input_names()) input_names_.emplace_back(name);
        for (const char* name : net_.output_names()) output_names_.emplace_back(name);
        if (input_names_.size() != r.input_specs.size())
            throw BackendError("inputs: the model has " + std::to_string(input_names_.size()) + " inputs, the config gives " +
                                   std::to_string(r.input_specs.size()),
                               true);
        if (output_names_.empty()) throw BackendError("the ncnn model declares no outputs");
    }

    void set_inputs(const std::vector<Tensor>& inputs) override {
        mats_.clear();
        for (const Tensor& t : inputs) {
            // One batch: drop a leading 1, then (w), (h,w), (c,h,w) or (c,d,h,w) map onto ncnn's Mat.
            std::vector<int64_t> s = t.shape;
            if (s.size() > 1 && s[0] == 1) s.erase(s.begin());
            ncnn::Mat m;
            if (s.size() == 1) m.create(int(s[0]));
            else if (s.size() == 2) m.create(int(s[1]), int(s[0]));
            else if (s.size() == 3) m.create(int(s[2]), int(s[1]), int(s[0]));
            else if (s.size() == 4) m.create(int(s[3]), int(s[2]), int(s[1]), int(s[0]));
            else throw BackendError("inputs: ncnn takes at most 4 dimensions after the batch", true);
            // Channels are padded to cstep in ncnn: copy one channel at a time.
            const size_t plane = size_t(m.w) * m.h * m.d;
            for (int c = 0; c < m.c; c++) std::memcpy(m.channel(c), t.data.data() + size_t(c) * plane, plane * sizeof(float));
            mats_.push_back(m);
        }
    }

    void run() override {
        ncnn::Extractor ex = net_.create_extractor();
        for (size_t i = 0; i < mats_.size(); i++) ex.input(input_names_[i].c_str(), mats_[i]);
        outs_.resize(output_names_.size());
        for (size_t i = 0; i < output_names_.size(); i++)
            if (ex.extract(output_names_[i].c_str(), outs_[i]) != 0)
                throw BackendError("ncnn extract of '" + output_names_[i] + "' failed");
    }

    std::vector<Tensor> outputs() override {
        std::vector<Tensor> out;
        for (size_t i = 0; i < outs_.size(); i++) {
            const ncnn::Mat& m = outs_[i];
            Tensor t;
            t.name = output_names_[i];
            const size_t plane = size_t(m.w) * m.h * m.d;
            t.data.resize(plane * m.c);
            for (int c = 0; c < m.c; c++) std::memcpy(t.data.data() + size_t(c) * plane, m.channel(c), plane * sizeof(float));
            // Flattened to (1, N), as devicelab's Python ncnn engine returns them, so digests compare.
            t.shape = {1, int64_t(t.data.size())};
            out.push_back(std::move(t));
        }
        return out;
    }

    std::vector<LayerTime> layer_times() override {
        // Layers are stored in topological order: with intermediate blobs kept (light mode off), extracting
        // each layer's first output in turn computes exactly that layer. type=1 skips the fp32/unpacking
        // conversion extract() would otherwise add to every intermediate blob.
        ncnn::Extractor ex = net_.create_extractor();
        ex.set_light_mode(false);
        for (size_t i = 0; i < mats_.size(); i++) ex.input(input_names_[i].c_str(), mats_[i]);
        std::vector<LayerTime> times;
        for (const ncnn::Layer* layer : net_.layers()) {
            if (layer->type == "Input" || layer->tops.empty()) continue;
            ncnn::Mat m;
            auto t0 = std::chrono::steady_clock::now();
            int ret = ex.extract(layer->tops[0], m, 1);
            auto t1 = std::chrono::steady_clock::now();
            if (ret != 0) throw BackendError("ncnn could not run layer '" + layer->name + "'");
            times.push_back({layer->name, layer->type, std::chrono::duration<double>(t1 - t0).count()});
        }
        return times;
    }

private:
    ncnn::Net net_;
    std::vector<std::string> input_names_, output_names_;
    std::vector<ncnn::Mat> mats_, outs_;
};

}  // namespace

std::unique_ptr<Backend> make_ncnn_backend() { return std::make_unique<NcnnBackend>(); }

}  // namespace dl
