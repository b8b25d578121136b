// The platform layer on iOS (and macOS): compiled only under __APPLE__, so it is NOT compiled or tested on the
// Linux machines devicelab's tests run on — kept this small for that reason.
//
// * No CPU affinity: Apple's kernels schedule threads by QoS class only (thread_policy_set's affinity tags are
//   hints between threads, not CPU numbers, and are ignored on Apple silicon). A config naming CPUs is refused
//   as unsupported.
// * Memory: task_info(TASK_VM_INFO). phys_footprint is the figure jetsam (the out-of-memory killer) and Xcode's
//   memory gauge use; ledger_phys_footprint_peak (rev 3 of the structure, iOS 11+) is its high-water mark. When the
//   running kernel fills an older revision, the current phys_footprint at stop is reported and named as such.
#ifdef __APPLE__

#include <mach/mach.h>
#include <sys/resource.h>

#include "platform.hpp"

namespace dl {
namespace platform {

const char* name() { return "apple"; }

bool set_affinity(const std::vector<int>&, std::string* why, bool* unsupported) {
    *unsupported = true;
    *why = "iOS has no CPU-affinity API (threads only, scheduled by QoS class)";
    return false;
}

bool current_affinity(std::vector<int>*) { return false; }

namespace {
bool vm_info(task_vm_info_data_t* info, mach_msg_type_number_t* count) {
    *count = TASK_VM_INFO_COUNT;
    return task_info(mach_task_self(), TASK_VM_INFO, reinterpret_cast<task_info_t>(info), count) == KERN_SUCCESS;
}
}  // namespace

long long resident_bytes() {
    task_vm_info_data_t info;
    mach_msg_type_number_t count;
    if (!vm_info(&info, &count) || count < TASK_VM_INFO_REV1_COUNT) return -1;
    return static_cast<long long>(info.phys_footprint);
}

MemoryPeak peak_memory() {
    task_vm_info_data_t info;
    mach_msg_type_number_t count;
    if (vm_info(&info, &count)) {
        if (count >= TASK_VM_INFO_REV3_COUNT) return {static_cast<long long>(info.ledger_phys_footprint_peak), "phys_footprint_peak"};
        if (count >= TASK_VM_INFO_REV1_COUNT) return {static_cast<long long>(info.phys_footprint), "phys_footprint at stop"};
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return {-1, "none"};
    return {static_cast<long long>(ru.ru_maxrss), "ru_maxrss"};  // bytes on Darwin
}

}  // namespace platform
}  // namespace dl

#endif  // __APPLE__
