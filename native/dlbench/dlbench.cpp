// dlbench — devicelab's uniform C++ runner: `dlbench [--listen PORT] [--port-file FILE] CONFIG.json`, speaking
// runner protocol v1 on stdin/stdout, or over one TCP connection with --listen (the iOS runner app, which has no
// stdin). This file is the core: main.cpp calls bench_main() on Linux and Android, the iOS app calls it on a thread.
//
// The same clock, warmup, inputs and output digest for every engine library compiled in (backend.hpp);
// the controller owns the stopping rule, dlbench only times. Order matters for honest numbers, as in the
// Python host runner: pin to the chosen CPUs first (every thread the engine creates inherits the mask),
// read RSS, load, run once (first inference), warm up, then time iterations on command. Protocol lines go to
// the original stdout (or the connection); anything the engine prints lands on stderr so it cannot corrupt them.
//
// Config (JSON): model, inputs [{name, shape, dtype: float32, file}], threads, cpus, precision, backend,
// warmup {min_iterations, min_seconds}, options {library: ncnn, weights, layer_times}, iterations (for
// callers that cannot write to stdin), outputs_file, results_file. Relative paths are relative to the config file,
// so a controller can push one folder to a phone and run it there — except results_file and --port-file, which
// are relative to the working folder (the iOS app's container root, where the controller looks for them).
// The operating system (affinity, memory counters) is behind platform.hpp, the channel behind Channel.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "backend.hpp"
#include "digest.hpp"
#include "dlbench.hpp"
#include "json.hpp"
#include "platform.hpp"
#include "runner.hpp"

#ifndef DLBENCH_VERSION
#define DLBENCH_VERSION "dev"
#endif

namespace {

constexpr int kProtocol = 1;
dl::EventOut g_out{"dlbench"};  // the channel, the results file (runner.hpp)
const dl::Hooks* g_hooks = nullptr;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void emit(const std::string& lines) { g_out.emit(lines); }

void emit_error(const std::string& message, bool unsupported = false) { g_out.error(message, unsupported); }

using dl::as_int;
using dl::BadInput;
using dl::read_file;
using dl::resolve;

std::string join(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
}

std::string choice(const dl::Json& v, const std::string& field, const std::vector<std::string>& allowed,
                   const std::string& fallback) {
    if (v.is_null()) return fallback;
    if (v.is_string() && std::find(allowed.begin(), allowed.end(), v.as_string()) != allowed.end()) return v.as_string();
    std::string got = v.is_string() ? "'" + v.as_string() + "'" : "this value";
    throw BadInput(field + ": " + got + " is not allowed; allowed: " + join(allowed));
}

// Python's repr of a shape tuple, part of the digest convention shared with devicelab's Python runner.
std::string shape_repr(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// sha256 over, per output in order: "float32" + repr(shape) + the little-endian float32 bytes — the
// same bytes devicelab's Python host runner hashes, so equal outputs give equal digests.
std::string outputs_digest(const std::vector<dl::Tensor>& outputs) {
    dl::Sha256 h;
    for (const auto& t : outputs) {
        h.update("float32");
        h.update(shape_repr(t.shape));
        h.update(t.data.data(), t.data.size() * sizeof(float));
    }
    return h.hexdigest();
}

// Each accuracy input run once (after timing, so never timed); every output stacked over them: shape [N, ...].
std::vector<dl::Tensor> stacked_outputs(dl::Backend& backend, const std::vector<std::vector<dl::Tensor>>& sets) {
    std::vector<dl::Tensor> stacked;
    for (const auto& inputs : sets) {
        backend.set_inputs(inputs);
        backend.run();
        std::vector<dl::Tensor> outs = backend.outputs();
        if (stacked.empty()) {
            for (const auto& o : outs) {
                dl::Tensor t;
                t.name = o.name;
                t.shape.push_back(0);
                t.shape.insert(t.shape.end(), o.shape.begin(), o.shape.end());
                stacked.push_back(std::move(t));
            }
        }
        if (outs.size() != stacked.size()) throw dl::BackendError("accuracy inputs: the number of outputs changed", false);
        for (size_t k = 0; k < outs.size(); k++) {
            stacked[k].shape[0]++;
            stacked[k].data.insert(stacked[k].data.end(), outs[k].data.begin(), outs[k].data.end());
        }
    }
    return stacked;
}

// Outputs as an uncompressed .npz (arr_0, arr_1, ... as numpy.savez names them), readable with numpy.load.
void write_npz(const std::string& path, const std::vector<dl::Tensor>& outputs) {
    std::string zip, central;
    auto u16 = [](std::string& s, uint32_t v) {
        s += char(v & 0xFF);
        s += char((v >> 8) & 0xFF);
    };
    auto u32 = [&](std::string& s, uint32_t v) {
        u16(s, v & 0xFFFF);
        u16(s, v >> 16);
    };
    for (size_t i = 0; i < outputs.size(); i++) {
        const auto& t = outputs[i];
        std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_repr(t.shape) + ", }";
        while ((10 + header.size() + 1) % 64) header += ' ';
        header += '\n';
        std::string npy = std::string("\x93NUMPY\x01\x00", 8);
        u16(npy, static_cast<uint32_t>(header.size()));
        npy += header;
        npy.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
        const std::string name = "arr_" + std::to_string(i) + ".npy";
        const uint32_t crc = dl::crc32(npy.data(), npy.size());
        const uint32_t offset = static_cast<uint32_t>(zip.size());
        u32(zip, 0x04034b50);  // local file header
        u16(zip, 20);
        u16(zip, 0);
        u16(zip, 0);  // stored
        u16(zip, 0);
        u16(zip, 0x21);  // 1980-01-01: fixed, so equal outputs give equal files
        u32(zip, crc);
        u32(zip, static_cast<uint32_t>(npy.size()));
        u32(zip, static_cast<uint32_t>(npy.size()));
        u16(zip, static_cast<uint32_t>(name.size()));
        u16(zip, 0);
        zip += name + npy;
        u32(central, 0x02014b50);  // central directory entry
        u16(central, 20);
        u16(central, 20);
        u16(central, 0);
        u16(central, 0);
        u16(central, 0);
        u16(central, 0x21);
        u32(central, crc);
        u32(central, static_cast<uint32_t>(npy.size()));
        u32(central, static_cast<uint32_t>(npy.size()));
        u16(central, static_cast<uint32_t>(name.size()));
        u16(central, 0);
        u16(central, 0);
        u16(central, 0);
        u16(central, 0);
        u32(central, 0);
        u32(central, offset);
        central += name;
    }
    const uint32_t cd_offset = static_cast<uint32_t>(zip.size());
    zip += central;
    u32(zip, 0x06054b50);  // end of central directory
    u16(zip, 0);
    u16(zip, 0);
    u16(zip, static_cast<uint32_t>(outputs.size()));
    u16(zip, static_cast<uint32_t>(outputs.size()));
    u32(zip, static_cast<uint32_t>(central.size()));
    u32(zip, cd_offset);
    u16(zip, 0);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f.write(zip.data(), static_cast<std::streamsize>(zip.size()))) throw std::runtime_error("cannot write " + path);
}

std::vector<dl::Tensor> read_input_specs(const dl::Json& inputs, bool with_data, const std::string& base_dir) {
    if (!inputs.is_array() || inputs.items().empty())
        throw BadInput("inputs: must be a non-empty list of {name, shape, dtype, file}");
    std::vector<dl::Tensor> out;
    for (size_t i = 0; i < inputs.items().size(); i++) {
        const dl::Json& spec = inputs.items()[i];
        const std::string where = "inputs[" + std::to_string(i) + "]";
        dl::Tensor t;
        t.name = spec["name"].is_string() ? spec["name"].as_string() : "in" + std::to_string(i);
        size_t count = 1;
        if (!spec["shape"].is_array() || spec["shape"].items().empty()) throw BadInput(where + ".shape: must be a list of positive integers");
        for (const auto& d : spec["shape"].items()) {
            t.shape.push_back(as_int(d, where + ".shape", 1, 1));
            count *= static_cast<size_t>(t.shape.back());
        }
        choice(spec["dtype"], where + ".dtype", {"float32"}, "float32");
        if (with_data) {
            if (!spec["file"].is_string())
                throw BadInput(where + ".file: dlbench reads inputs from files the controller writes (raw float32, C order)");
            const std::string path = resolve(base_dir, spec["file"].as_string());
            std::string bytes = read_file(path);
            if (bytes.size() != count * sizeof(float))
                throw BadInput(where + ".file: " + path + " has " + std::to_string(bytes.size()) + " bytes; shape " +
                               shape_repr(t.shape) + " of float32 needs " + std::to_string(count * sizeof(float)));
            t.data.resize(count);
            std::memcpy(t.data.data(), bytes.data(), bytes.size());
        }
        out.push_back(std::move(t));
    }
    return out;
}

int run(const std::string& config_path) {
    dl::Json cfg;
    try {
        cfg = dl::Json::parse(read_file(config_path));
    } catch (const dl::JsonError& e) {
        throw BadInput(config_path + " is not valid JSON: " + e.what());
    }
    if (!cfg.is_object()) throw BadInput(config_path + ": must be a JSON object");
    // First, so that every later error reaches the file too.
    if (cfg["results_file"].is_string() && !cfg["results_file"].as_string().empty()) {
        const std::string& results = cfg["results_file"].as_string();
        g_out.results = std::fopen(results.c_str(), "w");
        if (!g_out.results) throw BadInput("results_file: cannot write " + results + ": " + std::strerror(errno));
    } else if (!cfg["results_file"].is_null()) {
        throw BadInput("results_file: must be a file name (relative to the working folder)");
    }
    const size_t slash = config_path.rfind('/');
    const std::string base_dir = slash == std::string::npos ? "" : config_path.substr(0, slash);

    // Pin first: every thread the engine creates from now on inherits the mask.
    dl::pin_to(cfg["cpus"]);

    const dl::Json& options = cfg["options"];
    if (!options.is_null() && !options.is_object()) throw BadInput("options: must be an object");
    const std::string library = choice(options["library"], "options.library", dl::compiled_backends(),
                                       dl::compiled_backends().empty() ? "" : dl::compiled_backends()[0]);
    std::unique_ptr<dl::Backend> backend = dl::make_backend(library);
    if (!backend) throw BadInput("options.library: no backend compiled into this dlbench");

    dl::LoadRequest req;
    if (!cfg["model"].is_string()) throw BadInput("model: must be the path of the model file");
    req.model = resolve(base_dir, cfg["model"].as_string());
    req.options = &options;
    req.base_dir = base_dir;
    req.threads = as_int(cfg["threads"], "threads", 1, 1);
    req.precision = choice(cfg["precision"], "precision", backend->precisions(), "fp32");
    req.backend = choice(cfg["backend"], "backend", backend->backends(), "cpu");
    req.input_specs = read_input_specs(cfg["inputs"], false, base_dir);
    const dl::Json& warm = cfg["warmup"];
    const int min_warm = as_int(warm["min_iterations"], "warmup.min_iterations", 0, 3);
    const double min_warm_s = warm["min_seconds"].is_number() ? warm["min_seconds"].as_number() : 0.5;
    const int fixed_iterations = as_int(cfg["iterations"], "iterations", 1, 0);
    const int layer_passes = as_int(options["layer_times"], "options.layer_times", 0, 0);
    std::string outputs_file;
    if (cfg["outputs_file"].is_string()) outputs_file = resolve(base_dir, cfg["outputs_file"].as_string());
    // accuracy_files: one list of input specs (with files) per accuracy input. After "stop" each is run once,
    // untimed, and the outputs file holds every output stacked over them (what the controller compares with the
    // fp32 reference); without them it holds the timing input's outputs.
    std::vector<std::vector<dl::Tensor>> accuracy_sets;
    if (cfg["accuracy_files"].is_array())
        for (const auto& set : cfg["accuracy_files"].items()) accuracy_sets.push_back(read_input_specs(set, true, base_dir));
    else if (!cfg["accuracy_files"].is_null())
        throw BadInput("accuracy_files: must be a list of input lists");

    const long long rss_before = dl::platform::resident_bytes();
    auto t0 = Clock::now();
    backend->load(req);
    const double load_s = seconds_since(t0);

    std::vector<dl::Tensor> inputs = read_input_specs(cfg["inputs"], true, base_dir);
    t0 = Clock::now();
    backend->set_inputs(inputs);
    backend->run();
    const double first_s = seconds_since(t0);

    int warmups = 0;
    double warm_total = 0;
    while (warmups < min_warm || warm_total < min_warm_s) {
        t0 = Clock::now();
        backend->run();
        warm_total += seconds_since(t0);
        warmups++;
    }

    dl::JsonObject ready;
    ready.add("event", "ready")
        .add("protocol", kProtocol)
        .add("load_s", load_s)
        .add("first_s", first_s)
        .add("warmups", warmups)
        .add("warmup_s", warm_total)
        .raw("rss_before_load_bytes", rss_before >= 0 ? std::to_string(rss_before) : "null")
        .add("pid", static_cast<int>(getpid()));
    dl::add_current_cpus(ready);
    ready.add("runner", "dlbench")
        .add("runner_version", DLBENCH_VERSION)
        .add("library", backend->library())
        .add("library_version", backend->library_version());
    if (g_hooks && g_hooks->ready) g_hooks->ready(ready);
    emit(ready.str());

    dl::Commands commands(g_out.channel, fixed_iterations);
    std::string line;
    std::vector<double> samples, starts;
    while (commands.next(&line)) {
        dl::Json cmd;
        try {
            cmd = dl::Json::parse(line);
        } catch (const dl::JsonError& e) {
            emit_error(std::string("command is not JSON: ") + e.what());
            return 2;
        }
        const std::string name = cmd["cmd"].is_string() ? cmd["cmd"].as_string() : "";
        if (name == "run") {
            const int n = as_int(cmd["iterations"], "iterations", 1, 1);
            samples.assign(static_cast<size_t>(n), 0.0);
            starts.assign(static_cast<size_t>(n), 0.0);
            for (int i = 0; i < n; i++) {
                auto s0 = Clock::now();
                backend->run();
                samples[static_cast<size_t>(i)] = seconds_since(s0);
                // `t`: the start on steady_clock (CLOCK_MONOTONIC on Linux, dlprobe's clock), so the controller can
                // line the device's frequency and temperature samples up with the iterations.
                starts[static_cast<size_t>(i)] = std::chrono::duration<double>(s0.time_since_epoch()).count();
            }
            // Printed after the batch, not between iterations: writing is not part of inference.
            std::string text;
            for (size_t i = 0; i < samples.size(); i++)
                text += "{\"event\":\"iter\",\"s\":" + dl::json_number(samples[i]) + ",\"t\":" +
                        dl::json_number(starts[i]) + "}\n";
            dl::JsonObject batch;
            batch.add("event", "batch");
            if (g_hooks && g_hooks->batch) g_hooks->batch(batch);
            text += batch.str();
            emit(text);
        } else if (name == "stop") {
            // Peak memory before any layer profiling, which keeps every intermediate blob alive.
            const dl::platform::MemoryPeak peak = dl::platform::peak_memory();
            std::vector<dl::Tensor> outputs = backend->outputs();
            double layer_wall = -1;  // the median wall time of one layer pass: the profiling overhead's numerator
            if (layer_passes > 0) {
                std::vector<std::vector<dl::LayerTime>> passes;
                std::vector<double> walls;
                for (int p = 0; p < layer_passes; p++) {
                    const auto w0 = std::chrono::steady_clock::now();
                    passes.push_back(backend->layer_times());
                    walls.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
                }
                std::sort(walls.begin(), walls.end());
                layer_wall = walls.size() % 2 ? walls[walls.size() / 2]
                                              : 0.5 * (walls[walls.size() / 2 - 1] + walls[walls.size() / 2]);
                for (size_t k = 0; !passes.empty() && k < passes[0].size(); k++) {
                    std::vector<double> v;
                    for (const auto& pass : passes) v.push_back(pass[k].seconds);
                    std::sort(v.begin(), v.end());
                    double med = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
                    emit(dl::JsonObject()
                             .add("event", "op")
                             .add("name", passes[0][k].name)
                             .add("type", passes[0][k].type)
                             .add("s", med)
                             .add("passes", layer_passes)
                             .str());
                }
            }
            if (!accuracy_sets.empty()) outputs = stacked_outputs(*backend, accuracy_sets);
            dl::JsonObject done;
            done.add("event", "done").add("peak_rss_bytes", peak.bytes).add("peak_rss_method", peak.method);
            if (layer_wall >= 0) done.add("layer_wall_s", layer_wall);
            done.add("outputs_sha256", outputs_digest(outputs));
            if (!outputs_file.empty()) {
                write_npz(outputs_file, outputs);
                done.add("outputs_file", outputs_file);
            } else {
                done.raw("outputs_file", "null");
            }
            emit(done.str());
            return 0;
        } else {
            emit_error("unknown command " + line.substr(0, 200) + "; allowed: run, stop");
            return 2;
        }
    }
    emit_error(g_out.tcp ? "the connection closed before 'stop'" : "stdin closed before 'stop'");
    return 3;
}

// The command line: [--listen PORT] [--port-file FILE] CONFIG.json, or --version.
struct Args {
    std::string config;
    int listen = -1;  // -1: stdin/stdout
    std::string port_file;
    int accept_timeout_s = 300;  // from listening to the controller's connection (it polls the port file first)
    bool accept_timeout_given = false;
};

const char* kUsage = "usage: dlbench [--listen PORT [--port-file FILE] [--accept-timeout SECONDS]] CONFIG.json | "
                     "dlbench --version";

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (arg == "--listen" || arg == "--port-file" || arg == "--accept-timeout") {
            if (i + 1 >= argc) throw BadInput(arg + ": needs a value; " + kUsage);
            const std::string value = argv[++i];
            if (arg == "--accept-timeout") {
                char* end = nullptr;
                errno = 0;
                const long s = std::strtol(value.c_str(), &end, 10);
                if (value.empty() || *end != '\0' || errno != 0 || s < 1 || s > 86400)
                    throw BadInput("--accept-timeout: '" + value + "' is not allowed; allowed: whole seconds 1-86400");
                a.accept_timeout_s = static_cast<int>(s);
                a.accept_timeout_given = true;
                continue;
            }
            if (arg == "--port-file") {
                if (value.empty()) throw BadInput("--port-file: needs a file name (relative to the working folder)");
                a.port_file = value;
                continue;
            }
            char* end = nullptr;
            errno = 0;
            const long port = std::strtol(value.c_str(), &end, 10);
            if (value.empty() || *end != '\0' || errno != 0 || port < 0 || port > 65535)
                throw BadInput("--listen: '" + value + "' is not allowed; allowed: a port number 0-65535 (0 = any free port)");
            a.listen = static_cast<int>(port);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw BadInput("unknown option '" + arg + "'; allowed: --listen PORT, --port-file FILE, --accept-timeout "
                           "SECONDS, --version");
        } else if (a.config.empty()) {
            a.config = arg;
        } else {
            throw BadInput(std::string("one config file only; ") + kUsage);
        }
    }
    if (a.config.empty()) throw BadInput(kUsage);
    if (!a.port_file.empty() && a.listen < 0) throw BadInput("--port-file: only with --listen PORT");
    if (a.accept_timeout_given && a.listen < 0) throw BadInput("--accept-timeout: only with --listen PORT");
    return a;
}

int run_guarded(const std::string& config) {
    try {
        return run(config);
    } catch (const BadInput& e) {
        emit_error(e.what(), e.unsupported);
        return 2;
    } catch (const dl::BackendError& e) {
        emit_error(e.what(), e.unsupported);
        return e.bad_input || e.unsupported ? 2 : 1;
    } catch (const std::exception& e) {
        emit_error(std::string("dlbench: ") + e.what());
        return 1;
    }
}

}  // namespace

namespace dl {

int bench_main(int argc, char** argv, const Hooks& hooks) {
    g_hooks = &hooks;
    // Keep the protocol on the original stdout; engine chatter on fd 1 lands on stderr.
    FILE* out = stdout;
    int proto = dup(1);
    if (proto >= 0 && dup2(2, 1) >= 0) {
        FILE* f = fdopen(proto, "w");
        if (f) out = f;
    }
    std::unique_ptr<Channel> stdio = stdio_channel(out);
    g_out.channel = stdio.get();  // until --listen has a connection, errors go to stdout
    if (argc == 2 && (std::strcmp(argv[1], "--version") == 0)) {
        emit(JsonObject().add("runner", "dlbench").add("runner_version", DLBENCH_VERSION).raw("backends", [] {
            std::string s = "[";
            for (const auto& b : compiled_backends()) s += (s.size() > 1 ? "," : "") + json_quote(b);
            return s + "]";
        }()).str());
        return 0;
    }
    Args args;
    try {
        args = parse_args(argc, argv);
    } catch (const BadInput& e) {
        emit_error(e.what());
        return 2;
    }
    std::unique_ptr<Channel> tcp;
    if (args.listen >= 0) {
        std::string error;
        tcp = tcp_channel(args.listen, args.port_file, args.accept_timeout_s, &error);
        if (!tcp) {
            emit_error(error);
            return 1;
        }
        g_out.channel = tcp.get();
        g_out.tcp = true;
    }
    const int code = run_guarded(args.config);
    if (g_out.results) {
        std::fclose(g_out.results);
        g_out.results = nullptr;
    }
    g_out.channel = nullptr;
    g_out.tcp = false;
    g_hooks = nullptr;
    return code;  // `tcp` closes the connection here: the controller sees EOF after the last event
}

}  // namespace dl
