// What devicelab's two C++ runners share around the runner protocol: dlbench (protocol v1, native/dlbench) and dlllm
// (v3, native/llm). The event output (the channel, and the results file for a controller that can only pull files),
// bad input as one message naming the field (exit 2), the config's integers, pinning before any thread is started,
// the CPUs a `ready` line reports, and the command lines (the channel's, or the fixed script of a config's
// `iterations`). Header-only: the iOS runner app compiles dlbench's core without a library of ours to link.
#pragma once

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "json.hpp"
#include "platform.hpp"

namespace dl {

// Where a runner's event lines go.
struct EventOut {
    const char* program;         // names the runner on stderr beside an error a closed connection may lose
    Channel* channel = nullptr;  // the protocol channel: the original stdout and stdin, or one TCP connection
    bool tcp = false;            // --listen: the channel is a connection, which can be gone when an error is sent
    FILE* results = nullptr;     // results_file: every event line again, for a controller that can only pull files

    // One or more event lines (no final newline), to the channel and, when the config asked for it, the results file.
    void emit(const std::string& lines) {
        if (channel) channel->write_lines(lines);
        if (results) {
            std::fputs(lines.c_str(), results);
            std::fputc('\n', results);
            std::fflush(results);  // line by line: a pulled file shows how far a run got
        }
    }

    void error(const std::string& message, bool unsupported = false) {
        JsonObject e;
        e.add("event", "error").add("message", message);
        if (unsupported) e.add("unsupported", true);
        emit(e.str());
        // A connection may already be closed: the runner's stderr (a file on a phone, kept by the launcher) says why.
        if (tcp) std::cerr << program << ": " << message << std::endl;
    }
};

// Bad input: one message naming the field and the allowed values, exit 2 (the contract's bad-input code).
// `unsupported`: the config is fine but this runner cannot do it here (CPU pinning on iOS, a quantization it does
// not know).
struct BadInput : std::runtime_error {
    explicit BadInput(const std::string& what, bool unsupported = false)
        : std::runtime_error(what), unsupported(unsupported) {}
    bool unsupported;
};

inline std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw BadInput("cannot read " + path);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A config's integer (`fallback` when absent); anything else, or one beyond an int, is bad input.
inline int as_int(const Json& v, const std::string& field, int min_value, int fallback) {
    if (v.is_null()) return fallback;
    if (!v.is_number() || v.as_number() != std::floor(v.as_number()) || v.as_number() < min_value ||
        v.as_number() > 2147483647.0)
        throw BadInput(field + ": must be an integer >= " + std::to_string(min_value));
    return static_cast<int>(v.as_number());
}

// The config's `cpus`, pinned now: call it first, so that every thread started later (an engine's pool, ggml's)
// inherits the mask.
inline void pin_to(const Json& cpus) {
    if (cpus.is_array() && !cpus.items().empty()) {
        std::vector<int> wanted;
        for (const auto& c : cpus.items()) wanted.push_back(as_int(c, "cpus", 0, 0));
        std::string why;
        bool unsupported = false;
        if (!platform::set_affinity(wanted, &why, &unsupported))
            throw BadInput(unsupported ? "cpus: " + why : "cpus: cannot pin to these CPUs: " + why, unsupported);
    } else if (!cpus.is_null() && !cpus.is_array()) {
        throw BadInput("cpus: must be a list of CPU numbers");
    }
}

// The `ready` line's "cpus": where the process may run now (absent where the platform has no affinity: iOS).
inline void add_current_cpus(JsonObject& ready) {
    std::vector<int> now_cpus;
    if (platform::current_affinity(&now_cpus)) {
        std::string cpu_list = "[";
        for (int c : now_cpus) cpu_list += (cpu_list.size() > 1 ? "," : "") + std::to_string(c);
        ready.raw("cpus", cpu_list + "]");
    }
}

// The command lines: the channel's, or — with the config's `iterations`, for a controller that cannot write to
// stdin — one `run` of that many and a `stop`. Blank lines are skipped.
class Commands {
public:
    Commands(Channel* channel, int fixed_iterations) : channel_(channel), fixed_(fixed_iterations > 0) {
        if (fixed_)
            script_ = {"{\"cmd\":\"run\",\"iterations\":" + std::to_string(fixed_iterations) + "}",
                       "{\"cmd\":\"stop\"}"};
    }

    // The next non-blank line; false when the input (or the script) ended.
    bool next(std::string* line) {
        while (true) {
            if (fixed_) {
                if (next_ >= script_.size()) return false;
                *line = script_[next_++];
            } else if (!channel_->read_line(line)) {
                return false;
            }
            if (line->find_first_not_of(" \t\r\n") != std::string::npos) return true;
        }
    }

private:
    Channel* channel_;
    bool fixed_;
    std::vector<std::string> script_;
    size_t next_ = 0;
};

}  // namespace dl
