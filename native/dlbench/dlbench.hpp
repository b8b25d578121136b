// dlbench's entry point, shared by the command (main.cpp) and the iOS runner app (runners/ios), which calls it
// on a thread of its own and adds a few keys to the protocol's events through Hooks.
#pragma once

#include <functional>

#include "json.hpp"

namespace dl {

struct Hooks {
    std::function<void(JsonObject&)> ready;  // adds keys to the `ready` event (the iOS app: "qos")
    std::function<void(JsonObject&)> batch;  // adds keys to each `batch` event (the iOS app: "thermal_state")
};

// `dlbench [--listen PORT] [--port-file FILE] CONFIG.json` or `dlbench --version`; returns the exit status.
// Not reentrant: one run per process at a time.
int bench_main(int argc, char** argv, const Hooks& hooks = Hooks());

}  // namespace dl
