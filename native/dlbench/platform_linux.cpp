// The platform layer on Linux and Android: sched_setaffinity and /proc/self/status, as dlbench always did.
#include <sched.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "platform.hpp"

namespace dl {
namespace platform {

const char* name() { return "linux"; }

bool set_affinity(const std::vector<int>& cpus, std::string* why, bool* unsupported) {
    *unsupported = false;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) {
        if (c < 0 || c >= CPU_SETSIZE) {
            *why = "CPU " + std::to_string(c) + " is outside 0.." + std::to_string(CPU_SETSIZE - 1);
            return false;
        }
        CPU_SET(c, &set);
    }
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        *why = std::strerror(errno);
        return false;
    }
    return true;
}

bool current_affinity(std::vector<int>* cpus) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return false;
    cpus->clear();
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) cpus->push_back(c);
    return true;
}

namespace {
long long status_bytes(const char* field) {
    std::ifstream f("/proc/self/status");
    std::string line;
    const size_t n = std::strlen(field);
    while (std::getline(f, line))
        if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') return std::atoll(line.c_str() + n + 1) * 1024;
    return -1;
}
}  // namespace

long long resident_bytes() { return status_bytes("VmRSS"); }

MemoryPeak peak_memory() {
    const long long hwm = status_bytes("VmHWM");
    if (hwm >= 0) return {hwm, "VmHWM"};
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return {-1, "none"};
    return {static_cast<long long>(ru.ru_maxrss) * 1024, "ru_maxrss"};  // kilobytes on Linux
}

}  // namespace platform
}  // namespace dl
