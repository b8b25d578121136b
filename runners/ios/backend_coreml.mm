// The Core ML backend of dlbench (Objective-C++, ARC). Apple-only: not compiled on Linux (see README.md).
//
// model: a compiled `.mlmodelc` folder, or an `.mlpackage`/`.mlmodel` compiled on the phone at load
// (MLModel compileModelAtURL:, counted in load_s). Compute units from `options.compute_units` (cpuOnly, cpuAndGPU,
// cpuAndNeuralEngine, all: what devicelab's dlbench engine writes) or else from `backend`: cpu → CPUOnly,
// gpu → CPUAndGPU, ane → CPUAndNeuralEngine (iOS 16+), "coreml" → All (Core ML chooses); the `coreml-` prefixed
// names (devicelab's backend values) mean the same. precision: the package's own (devicelab writes one per
// precision); fp16 also sets allowLowPrecisionAccumulationOnGPU, int8 (int8 weights, dequantized by Core ML at
// load) changes nothing at run time, and the Neural Engine computes in fp16 whatever is asked. Core ML has no
// thread count: `threads` is ignored.
#import <CoreML/CoreML.h>
#import <Foundation/Foundation.h>

#include <algorithm>
#include <cstring>

#include "backend.hpp"

namespace dl {
namespace {

std::string text(NSError* error) { return error ? std::string(error.localizedDescription.UTF8String) : "unknown error"; }

const std::vector<std::pair<std::string, MLComputeUnits>>& named_units() {
    static const std::vector<std::pair<std::string, MLComputeUnits>> units = {
        {"cpuOnly", MLComputeUnitsCPUOnly}, {"cpuAndGPU", MLComputeUnitsCPUAndGPU},
        {"cpuAndNeuralEngine", MLComputeUnitsCPUAndNeuralEngine}, {"all", MLComputeUnitsAll}};
    return units;
}

MLComputeUnits compute_units(const std::string& backend, const Json& option) {
    if (option.is_string()) {
        for (const auto& [name, units] : named_units())
            if (option.as_string() == name) return units;
    }
    if (!option.is_null())
        throw BackendError("options.compute_units: " + (option.is_string() ? "'" + option.as_string() + "'" :
                           std::string("this value")) + " is not allowed; allowed: cpuOnly, cpuAndGPU, "
                           "cpuAndNeuralEngine, all", true);
    if (backend == "cpu" || backend == "coreml-cpu") return MLComputeUnitsCPUOnly;
    if (backend == "gpu" || backend == "coreml-gpu") return MLComputeUnitsCPUAndGPU;
    if (backend == "ane" || backend == "coreml-ane") return MLComputeUnitsCPUAndNeuralEngine;
    return MLComputeUnitsAll;
}

// Any numeric MLMultiArray as float32 in C order (strides honoured: Core ML may pad the last dimension).
Tensor to_tensor(const std::string& name, MLMultiArray* array) {
    Tensor t;
    t.name = name;
    size_t count = 1;
    for (NSNumber* d in array.shape) {
        t.shape.push_back(d.longLongValue);
        count *= static_cast<size_t>(d.longLongValue);
    }
    t.data.resize(count);
    const std::vector<int64_t> shape = t.shape;  // the block copies what it uses: not the data
    const size_t rank = shape.size();
    std::vector<long long> strides;
    for (NSNumber* s in array.strides) strides.push_back(s.longLongValue);
    const MLMultiArrayDataType type = array.dataType;
    float* out = t.data.data();
    [array getBytesWithHandler:^(const void* bytes, NSInteger size) {
        (void)size;  // the strides say where each element is
        std::vector<long long> index(rank, 0);
        for (size_t i = 0; i < count; i++) {
            long long offset = 0;
            for (size_t k = 0; k < rank; k++) offset += index[k] * strides[k];
            switch (type) {
                case MLMultiArrayDataTypeFloat32: out[i] = static_cast<const float*>(bytes)[offset]; break;
                case MLMultiArrayDataTypeDouble: out[i] = static_cast<float>(static_cast<const double*>(bytes)[offset]); break;
                case MLMultiArrayDataTypeFloat16: out[i] = static_cast<float>(static_cast<const __fp16*>(bytes)[offset]); break;
                case MLMultiArrayDataTypeInt32: out[i] = static_cast<float>(static_cast<const int32_t*>(bytes)[offset]); break;
                default: out[i] = 0; break;
            }
            for (size_t k = rank; k-- > 0;) {  // next index, last dimension fastest
                if (++index[k] < shape[k]) break;
                index[k] = 0;
            }
        }
    }];
    return t;
}

class CoreMLBackend : public Backend {
public:
    std::string library() const override { return "coreml"; }
    // Core ML ships with the OS and has no version of its own.
    std::string library_version() const override {
        return std::string("iOS ") + NSProcessInfo.processInfo.operatingSystemVersionString.UTF8String;
    }
    std::vector<std::string> precisions() const override { return {"fp32", "fp16", "int8"}; }
    std::vector<std::string> backends() const override {
        return {"cpu", "gpu", "ane", "coreml", "coreml-cpu", "coreml-gpu", "coreml-ane"};
    }

    void load(const LoadRequest& r) override {
        @autoreleasepool {
            NSURL* url = [NSURL fileURLWithPath:@(r.model.c_str())];
            NSError* error = nil;
            NSURL* compiled = url;
            if (![url.pathExtension isEqualToString:@"mlmodelc"]) {
                compiled = [MLModel compileModelAtURL:url error:&error];
                if (!compiled) throw BackendError("model: cannot compile " + r.model + " for Core ML: " + text(error), true);
            }
            MLModelConfiguration* config = [MLModelConfiguration new];
            config.computeUnits = compute_units(r.backend, (*r.options)["compute_units"]);
            config.allowLowPrecisionAccumulationOnGPU = r.precision == "fp16";
            model_ = [MLModel modelWithContentsOfURL:compiled configuration:config error:&error];
            if (!model_) throw BackendError("could not load " + r.model + " with Core ML: " + text(error));
            NSArray<NSString*>* names =
                [model_.modelDescription.outputDescriptionsByName.allKeys sortedArrayUsingSelector:@selector(compare:)];
            for (NSString* n in names) output_names_.emplace_back(n.UTF8String);  // by name: the model has no order
        }
    }

    void set_inputs(const std::vector<Tensor>& inputs) override {
        NSDictionary<NSString*, MLFeatureDescription*>* wanted = model_.modelDescription.inputDescriptionsByName;
        NSMutableDictionary<NSString*, MLFeatureValue*>* features = [NSMutableDictionary new];
        buffers_ = inputs;  // the arrays below point into these, for as long as the backend lives
        for (size_t i = 0; i < buffers_.size(); i++) {
            Tensor& t = buffers_[i];
            NSString* name = @(t.name.c_str());
            if (!wanted[name] && wanted.count == 1 && buffers_.size() == 1) name = wanted.allKeys.firstObject;
            if (!wanted[name]) {
                throw BackendError("inputs[" + std::to_string(i) + "].name: '" + t.name + "' is not an input of the " +
                                   "model; allowed: " + [[wanted.allKeys componentsJoinedByString:@", "] UTF8String], true);
            }
            NSMutableArray<NSNumber*>* shape = [NSMutableArray new];
            NSMutableArray<NSNumber*>* strides = [NSMutableArray new];
            long long stride = 1;
            for (size_t k = t.shape.size(); k-- > 0;) {
                [shape insertObject:@(t.shape[k]) atIndex:0];
                [strides insertObject:@(stride) atIndex:0];
                stride *= t.shape[k];
            }
            NSError* error = nil;
            MLMultiArray* array = [[MLMultiArray alloc] initWithDataPointer:t.data.data() shape:shape
                                                                   dataType:MLMultiArrayDataTypeFloat32 strides:strides
                                                                deallocator:nil error:&error];
            if (!array) throw BackendError("inputs[" + std::to_string(i) + "]: " + text(error), true);
            features[name] = [MLFeatureValue featureValueWithMultiArray:array];
        }
        NSError* error = nil;
        inputs_ = [[MLDictionaryFeatureProvider alloc] initWithDictionary:features error:&error];
        if (!inputs_) throw BackendError("inputs: " + text(error), true);
    }

    void run() override {
        // A pool per inference: on this thread nothing else drains Core ML's autoreleased temporaries.
        @autoreleasepool {
            NSError* error = nil;
            id<MLFeatureProvider> result = [model_ predictionFromFeatures:inputs_ error:&error];
            if (!result) throw BackendError("Core ML prediction failed: " + text(error));
            last_ = result;
        }
    }

    std::vector<Tensor> outputs() override {
        std::vector<Tensor> out;
        @autoreleasepool {
            for (const auto& name : output_names_) {
                MLMultiArray* array = [last_ featureValueForName:@(name.c_str())].multiArrayValue;
                if (!array) throw BackendError("output '" + name + "' is not a multi-array (dlbench compares tensors only)");
                out.push_back(to_tensor(name, array));
            }
        }
        return out;
    }

private:
    MLModel* model_ = nil;
    id<MLFeatureProvider> inputs_ = nil;
    id<MLFeatureProvider> last_ = nil;
    std::vector<Tensor> buffers_;
    std::vector<std::string> output_names_;
};

}  // namespace

std::unique_ptr<Backend> make_coreml_backend() { return std::make_unique<CoreMLBackend>(); }

}  // namespace dl
