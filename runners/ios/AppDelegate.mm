// The iOS runner app: main(), and an app delegate that runs dlbench's core (native/dlbench) on a thread of its own.
// Not compiled on Linux (see README.md); everything it calls is the core that devicelab builds and tests there.
//
// devicelab launches the app (DVT ProcessControl) with arguments `--listen 0 --port-file PORTFILE CONFIG` — paths
// relative to the app's home folder — and drives the runner protocol over the TCP port the core writes to
// PORTFILE. Launched without --listen, the core runs a config with fixed `iterations` and writes its events to the
// config's `results_file` (batch mode). The app quits by itself when the core returns.
#import <UIKit/UIKit.h>

#include <pthread/qos.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "dlbench.hpp"

namespace {

const char* qos_name(qos_class_t qos) {
    switch (qos) {
        case QOS_CLASS_USER_INTERACTIVE: return "userInteractive";
        case QOS_CLASS_USER_INITIATED: return "userInitiated";
        case QOS_CLASS_DEFAULT: return "default";
        case QOS_CLASS_UTILITY: return "utility";
        case QOS_CLASS_BACKGROUND: return "background";
        default: return "unspecified";
    }
}

const char* thermal_name(NSProcessInfoThermalState state) {
    switch (state) {
        case NSProcessInfoThermalStateNominal: return "nominal";
        case NSProcessInfoThermalStateFair: return "fair";
        case NSProcessInfoThermalStateSerious: return "serious";
        case NSProcessInfoThermalStateCritical: return "critical";
    }
    return "unknown";
}

// The launch arguments for the core, without the ones a debugger launch from Xcode adds (`-NSKey value` pairs).
std::vector<std::string> core_arguments() {
    std::vector<std::string> args;
    NSArray<NSString*>* all = NSProcessInfo.processInfo.arguments;
    for (NSUInteger i = 1; i < all.count; i++) {
        NSString* a = all[i];
        if ([a hasPrefix:@"-NS"] || [a hasPrefix:@"-Apple"]) {
            i++;  // and its value
            continue;
        }
        args.emplace_back(a.UTF8String);
    }
    return args;
}

}  // namespace

@interface DLAppDelegate : UIResponder <UIApplicationDelegate>
@property(strong, nonatomic) UIWindow* window;
@property(strong, nonatomic) UILabel* label;
@end

@implementation DLAppDelegate

- (BOOL)application:(UIApplication*)application didFinishLaunchingWithOptions:(NSDictionary*)options {
    // Relative paths in the arguments and results_file are relative to the app's home (its container root).
    chdir(NSHomeDirectory().fileSystemRepresentation);
    // A dimmed or locked screen would suspend the app in the middle of a timed batch.
    application.idleTimerDisabled = YES;
    // Diagnostics: the core's stderr (and the engine's prints) in a file the controller can pull with the results.
    [[NSFileManager defaultManager] createDirectoryAtPath:@"Documents/devicelab" withIntermediateDirectories:YES
                                               attributes:nil error:nil];
    std::freopen("Documents/devicelab/runner-stderr.txt", "w", stderr);

    self.window = [[UIWindow alloc] initWithFrame:UIScreen.mainScreen.bounds];
    UIViewController* root = [UIViewController new];
    self.label = [[UILabel alloc] initWithFrame:CGRectInset(self.window.bounds, 24, 24)];
    self.label.numberOfLines = 0;
    self.label.textAlignment = NSTextAlignmentCenter;
    [root.view addSubview:self.label];
    root.view.backgroundColor = UIColor.systemBackgroundColor;
    self.window.rootViewController = root;
    [self.window makeKeyAndVisible];

    std::vector<std::string> args = core_arguments();
    if (args.empty()) {  // opened from the home screen: nothing to run
        self.label.text = @"devicelab runner\n\ndevicelab launches this app with a benchmark config; "
                          @"opened by hand it has nothing to do.";
        return YES;
    }
    self.label.text = @"devicelab runner\n\nbenchmark running; the app quits when it is done.";
    NSThread* thread = [[NSThread alloc] initWithBlock:^{
        std::vector<char*> argv{const_cast<char*>("dlbench")};
        std::vector<std::string> owned = args;
        for (auto& a : owned) argv.push_back(a.data());
        argv.push_back(nullptr);
        dl::Hooks hooks;
        // The QoS class the timing thread really ran at (asked of the thread itself, not assumed).
        hooks.ready = [](dl::JsonObject& ready) { ready.add("qos", qos_name(qos_class_self())); };
        // Read after each batch (never inside one), so the reading is not timed.
        hooks.batch = [](dl::JsonObject& batch) {
            batch.add("thermal_state", thermal_name(NSProcessInfo.processInfo.thermalState));
        };
        const int code = dl::bench_main(static_cast<int>(argv.size()) - 1, argv.data(), hooks);
        std::fflush(stderr);
        dispatch_async(dispatch_get_main_queue(), ^{
            exit(code);  // a benchmark app quits by itself: the controller sees the process end
        });
    }];
    // userInitiated: the highest class an app's own work thread gets without being the UI thread; iOS schedules
    // it on the performance cores while the app is in the foreground.
    thread.qualityOfService = NSQualityOfServiceUserInitiated;
    thread.stackSize = 16 << 20;  // engines recurse and keep buffers on the stack; the 512 KiB default is too small
    [thread start];
    return YES;
}

@end

int main(int argc, char* argv[]) {
    @autoreleasepool {
        return UIApplicationMain(argc, argv, nil, NSStringFromClass([DLAppDelegate class]));
    }
}
