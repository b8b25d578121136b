// The platform layer: what dlbench's core needs from the operating system, so that the same core runs as a
// Linux/Android command (platform_linux.cpp) and inside the iOS runner app (platform_apple.cpp, Apple only).
// The protocol channel (channel.cpp) is plain POSIX and shared by both: stdin/stdout, or one TCP connection.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace dl {
namespace platform {

// "linux" or "apple": named in errors so a user sees which implementation answered.
const char* name();

// Pins the whole process (every thread created later inherits it) to `cpus`. False with `*why` set when the
// CPUs cannot be used, or when the platform has no affinity API at all (`*unsupported` then true: iOS schedules
// threads by QoS class only).
bool set_affinity(const std::vector<int>& cpus, std::string* why, bool* unsupported);

// The CPUs the process may run on; false when the platform cannot say (no affinity API).
bool current_affinity(std::vector<int>* cpus);

// Resident memory now, in bytes; -1 when unreadable.
long long resident_bytes();

// The process's memory high-water mark in bytes and the name of the counter it came from ("VmHWM",
// "ru_maxrss", "phys_footprint_peak"...); bytes is -1 when nothing could be read.
struct MemoryPeak {
    long long bytes;
    std::string method;
};
MemoryPeak peak_memory();

}  // namespace platform

// The runner protocol's line channel: event lines out, command lines in. Writes that fail (the controller went
// away) are dropped: the next read then ends the run, as a closed stdin does.
class Channel {
public:
    virtual ~Channel() = default;
    // One command line without its newline; false at end of input.
    virtual bool read_line(std::string* line) = 0;
    // Text (one or more lines, without the final newline), written and flushed at once.
    virtual void write_lines(const std::string& text) = 0;
};

// The original stdout (`out`, kept away from the engine's own prints) and stdin.
std::unique_ptr<Channel> stdio_channel(FILE* out);

// `--listen PORT`: binds 127.0.0.1:PORT (0: any free port), writes `port_file` (if not empty; relative to the
// working folder) atomically as {"port": N, "pid": P}, and waits up to `accept_timeout_s` for ONE connection, which
// then carries the protocol both ways. nullptr with `*error` set (one line naming the step) when any of that fails.
std::unique_ptr<Channel> tcp_channel(int port, const std::string& port_file, int accept_timeout_s, std::string* error);

}  // namespace dl
