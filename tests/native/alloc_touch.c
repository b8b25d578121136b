/* Test helper: allocate MiB mebibytes, write one byte per page (so every page is resident), hold it for
 * HOLD_MS milliseconds, exit with CODE. usage: alloc_touch MIB [HOLD_MS] [CODE] */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 100;
    long hold_ms = argc > 2 ? atol(argv[2]) : 100;
    int code = argc > 3 ? atoi(argv[3]) : 0;
    size_t n = mib << 20;
    volatile char *p = malloc(n);
    if (!p) return 99;
    long page = sysconf(_SC_PAGESIZE);
    for (size_t i = 0; i < n; i += (size_t)page) p[i] = 1;
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return code;
}
