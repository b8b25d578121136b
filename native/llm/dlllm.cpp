// dlllm — devicelab's LLM runner over libllama (llama.cpp): `dlllm [--listen PORT [--port-file FILE]] CONFIG.json`,
// speaking runner protocol v3 (docs/runner-protocol.md, "v3"), or `dlllm --quantize SRC DST QUANT`,
// `dlllm --info MODEL`, `dlllm --version`.
//
// One request = clear the KV cache; decode the `depth` tokens (untimed, in batches as llama-bench does); time the
// prefill of the P prompt tokens until the first generated token's logits are ready (TTFT); then G decode steps of one
// token each, timed one by one. Greedy argmax and the copy of the logits are outside every timed span; token ids come
// from the controller (no tokenization). The context is set up as llama-bench sets it (n_ctx = depth + P + G,
// n_batch 2048, n_ubatch 512, flash attention auto, f16 KV cache, a ggml thread pool of `threads` threads attached),
// so that dlllm's decode speed and llama-bench's `-n G -d D` measure the same computation.
//
// Order matters for honest numbers, as in dlbench: pin first (the thread pool's threads inherit the mask), read RSS,
// load, run the first request, warm up (unless the controller does), then time requests on command. Protocol lines go
// to the original stdout (or the connection); llama.cpp's log lands on stderr.
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
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "digest.hpp"
#include "ggml-cpu.h"
#include "json.hpp"
#include "llama.h"
#include "platform.hpp"
#include "runner.hpp"

#ifndef DLLLM_VERSION
#define DLLLM_VERSION "dev"
#endif
#ifndef LLAMA_CPP_COMMIT
#define LLAMA_CPP_COMMIT "unknown"
#endif

namespace {

constexpr int kProtocol = 3;
// As llama-bench's defaults (tools/llama-bench): the same batching for the depth and the prompt.
constexpr uint32_t kBatch = 2048;
constexpr uint32_t kUBatch = 512;

dl::EventOut g_out{"dlllm"};  // the channel, the results file (runner.hpp)

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double clock_s(Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

void emit(const std::string& lines) { g_out.emit(lines); }

void emit_error(const std::string& message, bool unsupported = false) { g_out.error(message, unsupported); }

using dl::as_int;
using dl::BadInput;
using dl::read_file;

std::string resolve(const std::string& base_dir, const std::string& path) {
    if (path.empty() || path[0] == '/' || base_dir.empty()) return path;
    return base_dir + "/" + path;
}

// The quantizations devicelab names (GGML's spelling), and libllama's file type for each. Q4_K is llama.cpp's Q4_K_M.
struct Quant {
    const char* name;
    llama_ftype ftype;
};
const Quant kQuants[] = {{"F32", LLAMA_FTYPE_ALL_F32},     {"F16", LLAMA_FTYPE_MOSTLY_F16},
                         {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0}, {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
                         {"Q4_K", LLAMA_FTYPE_MOSTLY_Q4_K_M}};

std::string quant_names() {
    std::string s;
    for (const auto& q : kQuants) s += (s.empty() ? "" : ", ") + std::string(q.name);
    return s;
}

const char* quant_of(llama_ftype t) {
    for (const auto& q : kQuants)
        if (q.ftype == t) return q.name;
    return nullptr;
}

// "GGUF" and nothing else: llama.cpp's own error for another file is a log line, not a message for a user.
void check_gguf(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw BadInput("model: cannot read " + path + ": " + std::strerror(errno));
    char magic[4] = {0, 0, 0, 0};
    f.read(magic, 4);
    if (f.gcount() != 4 || std::memcmp(magic, "GGUF", 4) != 0)
        throw BadInput("model: " + path + " is not a GGUF file (it does not start with 'GGUF')");
}

// llama.cpp's log, to stderr, errors and warnings only: the protocol channel never sees it.
void quiet_log(ggml_log_level level, const char* text, void*) {
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) std::fputs(text, stderr);
}

llama_model* load_model(const std::string& path) {
    check_gguf(path);
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;  // CPU only: this build has no GPU backend, and the CPU is what is measured
    llama_model* model = llama_model_load_from_file(path.c_str(), mp);
    if (!model) throw BadInput("model: llama.cpp could not load " + path + " (see the runner's stderr for why)");
    return model;
}

std::vector<int> token_list(const dl::Json& v, const std::string& field, int n_vocab, bool allow_empty) {
    if (v.is_null() && allow_empty) return {};
    if (!v.is_array() || (!allow_empty && v.items().empty()))
        throw BadInput(field + ": must be a " + (allow_empty ? "" : "non-empty ") + "list of token ids");
    std::vector<int> out;
    out.reserve(v.items().size());
    for (const auto& t : v.items()) {
        const int id = as_int(t, field, 0, 0);
        if (id >= n_vocab)
            throw BadInput(field + ": token id " + std::to_string(id) + " is not allowed; allowed: 0-" +
                           std::to_string(n_vocab - 1) + " (the model's vocabulary)");
        out.push_back(id);
    }
    return out;
}

// Decodes `tokens` into the KV cache in batches of at most kBatch, as llama-bench's prompt test does.
void decode_all(llama_context* ctx, std::vector<int>& tokens, const char* what) {
    for (size_t off = 0; off < tokens.size(); off += kBatch) {
        const int32_t n = static_cast<int32_t>(std::min<size_t>(kBatch, tokens.size() - off));
        const int32_t rc = llama_decode(ctx, llama_batch_get_one(tokens.data() + off, n));
        if (rc != 0) throw std::runtime_error(std::string("llama_decode failed on the ") + what + " (" + std::to_string(rc) + ")");
    }
    llama_synchronize(ctx);
}

int argmax(const float* logits, int n) { return static_cast<int>(std::max_element(logits, logits + n) - logits); }

struct Request {
    double start;  // on the runner's monotonic clock
    double prefill_s;
    std::vector<double> token_s;
    double total_s;
};

class Runner {
public:
    Runner(llama_context* ctx, int n_vocab, std::vector<int> depth, std::vector<int> prompt, int gen)
        : ctx_(ctx), n_vocab_(n_vocab), depth_(std::move(depth)), prompt_(std::move(prompt)), gen_(gen) {
        logits_.assign(static_cast<size_t>(gen + 1) * static_cast<size_t>(n_vocab), 0.0f);
    }

    Request request() {
        Request r;
        llama_memory_clear(llama_get_memory(ctx_), true);
        if (!depth_.empty()) decode_all(ctx_, depth_, "depth tokens");  // untimed: the cache a chat already holds
        std::vector<int> prompt = prompt_;  // llama_batch_get_one takes a non-const pointer
        const auto t0 = Clock::now();
        r.start = clock_s(t0);
        decode_all(ctx_, prompt, "prompt");
        r.prefill_s = seconds_since(t0);
        int token = take(0);
        int pos = static_cast<int>(depth_.size() + prompt_.size());
        r.token_s.resize(static_cast<size_t>(gen_));
        for (int i = 0; i < gen_; i++) {
            llama_token one = token;
            const auto s0 = Clock::now();
            const int32_t rc = llama_decode(ctx_, llama_batch_get_one(&one, 1));
            if (rc != 0) throw std::runtime_error("llama_decode failed on decode step " + std::to_string(i) + " (" + std::to_string(rc) + ")");
            llama_synchronize(ctx_);
            r.token_s[static_cast<size_t>(i)] = seconds_since(s0);
            token = take(i + 1);
            pos++;
        }
        r.total_s = r.prefill_s;
        for (double s : r.token_s) r.total_s += s;
        return r;
    }

    const std::vector<float>& logits() const { return logits_; }

private:
    // The last position's logits, kept as row `row`, and the greedy next token: after the timed span.
    int take(int row) {
        const float* l = llama_get_logits_ith(ctx_, -1);
        if (!l) throw std::runtime_error("llama.cpp returned no logits");
        std::memcpy(logits_.data() + static_cast<size_t>(row) * n_vocab_, l, sizeof(float) * n_vocab_);
        return argmax(l, n_vocab_);
    }

    llama_context* ctx_;
    int n_vocab_;
    std::vector<int> depth_, prompt_;
    int gen_;
    std::vector<float> logits_;
};

std::string request_lines(const Request& r, int prompt_tokens) {
    std::string text = dl::JsonObject()
                           .add("event", "prefill")
                           .add("s", r.prefill_s)
                           .add("tokens", prompt_tokens)
                           .add("t", r.start)
                           .str() + "\n";
    for (double s : r.token_s) text += "{\"event\":\"token\",\"s\":" + dl::json_number(s) + "}\n";
    text += dl::JsonObject().add("event", "iter").add("s", r.total_s).add("t", r.start).str() + "\n";
    return text;
}

std::string meta(const llama_model* model, const char* key) {
    char buf[256];
    return llama_model_meta_val_str(model, key, buf, sizeof buf) >= 0 ? std::string(buf) : std::string();
}

int run(const std::string& config_path) {
    dl::Json cfg;
    try {
        cfg = dl::Json::parse(read_file(config_path));
    } catch (const dl::JsonError& e) {
        throw BadInput(config_path + " is not valid JSON: " + e.what());
    }
    if (!cfg.is_object()) throw BadInput(config_path + ": must be a JSON object");
    if (cfg["results_file"].is_string() && !cfg["results_file"].as_string().empty()) {
        const std::string& results = cfg["results_file"].as_string();
        g_out.results = std::fopen(results.c_str(), "w");
        if (!g_out.results) throw BadInput("results_file: cannot write " + results + ": " + std::strerror(errno));
    }
    const size_t slash = config_path.rfind('/');
    const std::string base_dir = slash == std::string::npos ? "" : config_path.substr(0, slash);

    // Pin first: the thread pool created below inherits the mask.
    dl::pin_to(cfg["cpus"]);
    const int threads = as_int(cfg["threads"], "threads", 1, 1);
    if (cfg["precision"].is_string() && cfg["precision"].as_string() != "fp32")
        throw BadInput("precision: '" + cfg["precision"].as_string() + "' is not allowed; allowed: fp32 (an LLM's "
                       "weight type is its quant)", true);
    if (cfg["backend"].is_string() && cfg["backend"].as_string() != "cpu")
        throw BadInput("backend: '" + cfg["backend"].as_string() + "' is not allowed; allowed: cpu", true);
    const dl::Json& llm = cfg["llm"];
    if (!llm.is_object()) throw BadInput("llm: must be {prompt: [token ids], depth: [token ids], gen_tokens: G, seed}");
    const int gen = as_int(llm["gen_tokens"], "llm.gen_tokens", 1, -1);
    if (gen < 1) throw BadInput("llm.gen_tokens: must be an integer >= 1");
    std::string want_quant;
    if (llm["quant"].is_string()) want_quant = llm["quant"].as_string();
    const dl::Json& warm = cfg["warmup"];
    const bool controller_warmup = warm["by"].is_string() && warm["by"].as_string() == "controller";
    const int min_warm = as_int(warm["min_iterations"], "warmup.min_iterations", 0, 1);
    const double min_warm_s = warm["min_seconds"].is_number() ? warm["min_seconds"].as_number() : 0.0;
    const int fixed_iterations = as_int(cfg["iterations"], "iterations", 1, 0);
    std::string outputs_file;
    if (cfg["outputs_file"].is_string()) outputs_file = resolve(base_dir, cfg["outputs_file"].as_string());
    if (!cfg["model"].is_string()) throw BadInput("model: must be the path of a GGUF file");
    const std::string model_path = resolve(base_dir, cfg["model"].as_string());

    const long long rss_before = dl::platform::resident_bytes();
    auto t0 = Clock::now();
    llama_model* model = load_model(model_path);
    const llama_vocab* vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const char* quant = quant_of(llama_model_ftype(model));
    if (!quant)
        throw BadInput("model: its file type (" + meta(model, "general.file_type") + ") is not a quantization dlllm "
                       "names; allowed: " + quant_names(), true);
    if (!want_quant.empty() && want_quant != quant) {
        bool known = false;
        for (const auto& q : kQuants) known = known || want_quant == q.name;
        throw BadInput(known ? "llm.quant: asked for " + want_quant + " but the model file holds " + quant
                             : "llm.quant: '" + want_quant + "' is not allowed; allowed: " + quant_names(), true);
    }
    std::vector<int> prompt = token_list(llm["prompt"], "llm.prompt", n_vocab, false);
    std::vector<int> depth = token_list(llm["depth"], "llm.depth", n_vocab, true);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(depth.size() + prompt.size() + static_cast<size_t>(gen));
    cp.n_batch = kBatch;
    cp.n_ubatch = kUBatch;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.type_k = GGML_TYPE_F16;
    cp.type_v = GGML_TYPE_F16;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.no_perf = true;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) throw BadInput("llama.cpp could not create a context of " + std::to_string(cp.n_ctx) + " tokens");
    // As llama-bench: one pool of `threads` threads for the whole run (without one, ggml starts threads per graph).
    ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
    ggml_threadpool* pool = ggml_threadpool_new(&tpp);
    if (!pool) throw std::runtime_error("ggml could not create a thread pool of " + std::to_string(threads) + " threads");
    llama_attach_threadpool(ctx, pool, nullptr);
    const double load_s = seconds_since(t0);

    Runner runner(ctx, n_vocab, depth, prompt, gen);
    t0 = Clock::now();
    runner.request();
    const double first_s = seconds_since(t0);
    int warmups = 0;
    double warm_total = 0;
    while (!controller_warmup && (warmups < min_warm || warm_total < min_warm_s)) {
        warm_total += runner.request().total_s;
        warmups++;
    }

    dl::JsonObject info;
    info.raw("n_params", std::to_string(llama_model_n_params(model)))
        .raw("model_bytes", std::to_string(llama_model_size(model)))
        .add("quant", quant)
        .add("kv_type", "f16")
        .add("n_ctx", static_cast<int>(llama_n_ctx(ctx)))
        .add("n_vocab", n_vocab)
        .add("n_batch", static_cast<int>(kBatch))
        .add("n_ubatch", static_cast<int>(kUBatch))
        .add("flash_attn", "auto");
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
    ready.add("runner", "dlllm")
        .add("runner_version", DLLLM_VERSION)
        .add("library", "llama.cpp")
        .add("library_version", LLAMA_CPP_COMMIT)
        .raw("llm", info.str());
    emit(ready.str());

    dl::Commands commands(g_out.channel, fixed_iterations);
    std::string line;
    while (commands.next(&line)) {
        dl::Json cmd;
        try {
            cmd = dl::Json::parse(line);
        } catch (const dl::JsonError& e) {
            emit_error(std::string("command is not JSON: ") + e.what());
            return 2;
        }
        const std::string name = cmd["cmd"].is_string() ? cmd["cmd"].as_string() : "";
        if (name == "run" || name == "warmup") {
            const int n = as_int(cmd["iterations"], "iterations", 1, 1);
            std::vector<Request> done;
            done.reserve(static_cast<size_t>(n));
            for (int i = 0; i < n; i++) done.push_back(runner.request());
            // Printed after the batch: writing is not inference.
            std::string text;
            for (const auto& r : done) text += request_lines(r, static_cast<int>(prompt.size()));
            text += "{\"event\":\"batch\"}";
            emit(text);
        } else if (name == "stop") {
            const dl::platform::MemoryPeak peak = dl::platform::peak_memory();
            const std::vector<float>& logits = runner.logits();
            dl::Sha256 h;
            h.update(logits.data(), logits.size() * sizeof(float));
            dl::JsonObject done;
            done.add("event", "done").add("peak_rss_bytes", peak.bytes).add("peak_rss_method", peak.method);
            done.add("outputs_sha256", h.hexdigest());
            if (!outputs_file.empty()) {
                std::ofstream f(outputs_file, std::ios::binary | std::ios::trunc);
                if (!f.write(reinterpret_cast<const char*>(logits.data()),
                             static_cast<std::streamsize>(logits.size() * sizeof(float))))
                    throw std::runtime_error("cannot write " + outputs_file);
                done.add("outputs_file", outputs_file);
                done.raw("outputs_shape", "[" + std::to_string(gen + 1) + "," + std::to_string(n_vocab) + "]");
            } else {
                done.raw("outputs_file", "null");
            }
            emit(done.str());
            llama_free(ctx);
            ggml_threadpool_free(pool);
            llama_model_free(model);
            return 0;
        } else {
            emit_error("unknown command " + line.substr(0, 200) + "; allowed: warmup, run, stop");
            return 2;
        }
    }
    emit_error(g_out.tcp ? "the connection closed before 'stop'" : "stdin closed before 'stop'");
    return 3;
}

// `--quantize SRC DST QUANT`: libllama's llama_model_quantize with its defaults (what llama.cpp's quantize tool does).
int quantize(const std::string& src, const std::string& dst, const std::string& quant) {
    const Quant* q = nullptr;
    for (const auto& k : kQuants)
        if (quant == k.name) q = &k;
    if (!q) throw BadInput("QUANT: '" + quant + "' is not allowed; allowed: " + quant_names());
    check_gguf(src);
    llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = q->ftype;
    p.nthread = 1;  // one thread: the same bytes on every machine, whatever its cores
    if (llama_model_quantize(src.c_str(), dst.c_str(), &p) != 0)
        throw std::runtime_error("llama_model_quantize failed for " + src + " -> " + quant + " (see stderr)");
    emit(dl::JsonObject().add("event", "quantized").add("quant", q->name).add("path", dst).str());
    return 0;
}

// `--info MODEL`: what libllama reads of a GGUF, one JSON line (used to check every zoo file loads).
int info(const std::string& path) {
    llama_model* model = load_model(path);
    const char* quant = quant_of(llama_model_ftype(model));
    emit(dl::JsonObject()
             .add("event", "info")
             .add("arch", meta(model, "general.architecture"))
             .add("quant", quant ? quant : "")
             .add("file_type", static_cast<int>(llama_model_ftype(model)))
             .raw("n_params", std::to_string(llama_model_n_params(model)))
             .raw("model_bytes", std::to_string(llama_model_size(model)))
             .add("n_vocab", llama_vocab_n_tokens(llama_model_get_vocab(model)))
             .add("n_embd", llama_model_n_embd(model))
             .add("n_layer", llama_model_n_layer(model))
             .add("desc", [&] {
                 char buf[256];
                 llama_model_desc(model, buf, sizeof buf);
                 return std::string(buf);
             }())
             .str());
    llama_model_free(model);
    return 0;
}

const char* kUsage = "usage: dlllm [--listen PORT [--port-file FILE] [--accept-timeout SECONDS]] CONFIG.json | "
                     "dlllm --quantize SRC DST QUANT | dlllm --info MODEL | dlllm --version";

int main_guarded(int argc, char** argv) {
    try {
        std::vector<std::string> args(argv + 1, argv + argc);
        if (args.size() == 4 && args[0] == "--quantize") return quantize(args[1], args[2], args[3]);
        if (args.size() == 2 && args[0] == "--info") return info(args[1]);
        std::string config, port_file;
        int listen = -1, accept_timeout = 300;
        for (size_t i = 0; i < args.size(); i++) {
            const std::string& a = args[i];
            if (a == "--listen" || a == "--port-file" || a == "--accept-timeout") {
                if (i + 1 >= args.size()) throw BadInput(a + ": needs a value; " + kUsage);
                const std::string& v = args[++i];
                char* end = nullptr;
                const long n = std::strtol(v.c_str(), &end, 10);
                if (a == "--port-file") {
                    port_file = v;
                } else if (v.empty() || *end != '\0' || n < (a == "--listen" ? 0 : 1) || n > (a == "--listen" ? 65535 : 86400)) {
                    throw BadInput(a + ": '" + v + "' is not allowed; allowed: " +
                                   (a == "--listen" ? "a port number 0-65535" : "whole seconds 1-86400"));
                } else if (a == "--listen") {
                    listen = static_cast<int>(n);
                } else {
                    accept_timeout = static_cast<int>(n);
                }
            } else if (a.size() > 1 && a[0] == '-') {
                throw BadInput("unknown option '" + a + "'; " + kUsage);
            } else if (config.empty()) {
                config = a;
            } else {
                throw BadInput(std::string("one config file only; ") + kUsage);
            }
        }
        if (config.empty()) throw BadInput(kUsage);
        std::unique_ptr<dl::Channel> tcp;
        if (listen >= 0) {
            std::string error;
            tcp = dl::tcp_channel(listen, port_file, accept_timeout, &error);
            if (!tcp) {
                emit_error(error);
                return 1;
            }
            g_out.channel = tcp.get();
            g_out.tcp = true;
        }
        const int code = run(config);
        g_out.channel = nullptr;
        return code;
    } catch (const BadInput& e) {
        emit_error(e.what(), e.unsupported);
        return 2;
    } catch (const std::exception& e) {
        emit_error(std::string("dlllm: ") + e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    // Keep the protocol on the original stdout; llama.cpp's prints on fd 1 land on stderr.
    FILE* out = stdout;
    const int proto = dup(1);
    if (proto >= 0 && dup2(2, 1) >= 0) {
        FILE* f = fdopen(proto, "w");
        if (f) out = f;
    }
    std::unique_ptr<dl::Channel> stdio = dl::stdio_channel(out);
    g_out.channel = stdio.get();
    if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
        emit(dl::JsonObject()
                 .add("runner", "dlllm")
                 .add("runner_version", DLLLM_VERSION)
                 .add("llama_cpp_commit", LLAMA_CPP_COMMIT)
                 .add("protocol", kProtocol)
                 .str());
        return 0;
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    const int code = main_guarded(argc, argv);
    if (g_out.results) std::fclose(g_out.results);
    llama_backend_free();
    return code;
}
