/* A minimal program speaking devicelab's runner protocol v1 (README, "Runner protocol"), in C with libc only,
 * for the `protocol` engine: how an in-house engine is benchmarked without changing devicelab.
 *
 * Its "engine" is a stand-in: loading reads the model file, one inference is a checksum pass over its bytes.
 * Replace load_model() and infer() with your engine's calls; keep everything else.
 *
 *   cc -O2 -o protocol_runner protocol_runner.c                                   # the host
 *   aarch64-linux-gnu-gcc -O2 -static -o protocol_runner protocol_runner.c        # a phone (static arm64)
 *
 * devicelab starts it as `protocol_runner CONFIG.json` in the config's folder (relative paths resolve there),
 * already pinned to the config's CPUs; it answers on stdout, one JSON object per line, and reads commands on stdin.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long status_kb(const char *field) { /* VmRSS / VmHWM of this process, kB (Linux /proc) */
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kb = strtol(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (size) *size = (size_t)n; }
    return buf;
}

/* The string value of "key" in a flat JSON text, unescaped (\" \\ \/ \n \t and \u00XX); NULL if absent. */
static char *json_string(const char *json, const char *key) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    if (!p) return NULL;
    p = strchr(p + strlen(pattern), ':');
    if (!p) return NULL;
    while (*++p == ' ') {}
    if (*p != '"') return NULL;
    char *out = malloc(strlen(p) + 1), *o = out;
    for (++p; *p && *p != '"'; ++p) {
        if (*p != '\\') { *o++ = *p; continue; }
        ++p;
        if (*p == 'n') *o++ = '\n';
        else if (*p == 't') *o++ = '\t';
        else if (*p == 'u' && p[1] && p[2] && p[3] && p[4]) { *o++ = (char)strtol((char[]){p[3], p[4], 0}, NULL, 16); p += 4; }
        else *o++ = *p;
    }
    *o = 0;
    return out;
}

static long json_int(const char *json, const char *key, long fallback) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\"", key);
    const char *p = strstr(json, pattern);
    if (!p || !(p = strchr(p + strlen(pattern), ':'))) return fallback;
    char *end;
    long v = strtol(p + 1, &end, 10);
    return end == p + 1 ? fallback : v;
}

/* ---- the stand-in engine ---- */
static const unsigned char *model;
static size_t model_size;
static volatile uint64_t sink;

static int load_model(const char *path) {
    model = (const unsigned char *)read_file(path, &model_size);
    return model != NULL;
}

static void infer(void) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < model_size; ++i) h = (h ^ model[i]) * 1099511628211ull;
    sink = h;
}

static void error(const char *message) {
    printf("{\"event\":\"error\",\"message\":\"%s\"}\n", message);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) { error("usage: protocol_runner CONFIG.json"); return 2; }
    char *config = read_file(argv[1], NULL);
    if (!config) { error("cannot read the config file"); return 2; }
    char *path = json_string(config, "model");
    if (!path) { error("config: no model"); return 2; }
    long rss_before = status_kb("VmRSS");

    double t0 = now_s();
    if (!load_model(path)) { error("cannot read the model file"); return 1; }
    double load_s = now_s() - t0;
    t0 = now_s();
    infer();
    double first_s = now_s() - t0;

    /* warmup: at least min_iterations and min_seconds (devicelab's defaults: 3 and 0.5 s) */
    const char *warm = strstr(config, "\"warmup\"");
    long min_iter = warm ? json_int(warm, "min_iterations", 3) : 3;
    double min_s = 0.5;
    if (warm && (warm = strstr(warm, "\"min_seconds\"")) && (warm = strchr(warm, ':'))) min_s = strtod(warm + 1, NULL);
    long warmups = 0;
    double warm_s = 0;
    while (warmups < min_iter || warm_s < min_s) { t0 = now_s(); infer(); warm_s += now_s() - t0; ++warmups; }

    cpu_set_t set;
    char cpus[1024] = "";
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &set)) snprintf(cpus + strlen(cpus), sizeof cpus - strlen(cpus), "%s%d", *cpus ? "," : "", c);
    printf("{\"event\":\"ready\",\"protocol\":1,\"load_s\":%.9f,\"first_s\":%.9f,\"warmups\":%ld,\"warmup_s\":%.9f,"
           "\"rss_before_load_bytes\":%ld,\"cpus\":[%s],\"runner_version\":\"protocol_runner-1\"}\n",
           load_s, first_s, warmups, warm_s, rss_before * 1024, cpus);
    fflush(stdout);

    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (strstr(line, "\"stop\"")) {
            printf("{\"event\":\"done\",\"peak_rss_bytes\":%ld,\"peak_rss_method\":\"VmHWM\"}\n", status_kb("VmHWM") * 1024);
            fflush(stdout);
            return 0;
        }
        long n = json_int(line, "iterations", 0);
        if (n <= 0) { error("unknown command"); return 2; }
        double *s = malloc(sizeof(double) * (size_t)n);
        for (long i = 0; i < n; ++i) { t0 = now_s(); infer(); s[i] = now_s() - t0; }
        for (long i = 0; i < n; ++i) printf("{\"event\":\"iter\",\"s\":%.9f}\n", s[i]); /* after the batch: printing is not inference */
        printf("{\"event\":\"batch\"}\n");
        fflush(stdout);
        free(s);
    }
    error("stdin closed before stop");
    return 3;
}
