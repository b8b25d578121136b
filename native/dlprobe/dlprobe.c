/*
 * dlprobe — launch a benchmark pinned to chosen CPUs and sample what it does to the device, next to it.
 *
 *   dlprobe [--cpus LIST] [--interval-ms N] [--slow-interval-ms N] [--out FILE] -- CMD ARGS...
 *
 * The child is pinned with sched_setaffinity between fork and exec, so every thread it (or the engine in
 * it) creates inherits the mask before any engine code runs. dlprobe itself moves to a CPU outside that
 * set when one is free, so sampling does not steal time from the measured cores.
 *
 * Every --interval-ms (default 10) it samples the child's VmRSS/VmHWM and the current frequency of each
 * pinned core; every --slow-interval-ms (default 500) the thermal zones (by type) and the battery's
 * current_now/voltage_now, which change slowly and on phones may sit behind slow buses. When the child
 * exits it records wait4's rusage (ru_maxrss: the kernel's exact high-water mark over the child's whole
 * life, which polling can miss at the very end) and the exit status, and writes one JSON document:
 * a summary plus the sample series as columns. stdin, stdout and stderr are the child's own (inherited,
 * never copied), so a runner-protocol program under dlprobe still talks to its controller.
 *
 * dlprobe's exit status is the child's (128 + signal when it was killed); 2 for bad arguments, 127 when
 * the command cannot be executed. No dependencies beyond libc: it is built static for phones.
 *
 * Cost: files read at every sample are opened once and re-read with pread(), and the loop sleeps in
 * sigtimedwait() so the child's exit (SIGCHLD) or a forwarded signal wakes it at once.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DLPROBE_FORMAT 1
#define MAX_CPUS 1024
#define MAX_ZONES 64
#define MAX_FIELD 128

static const char *USAGE =
    "usage: dlprobe [--cpus LIST] [--interval-ms N] [--slow-interval-ms N] [--out FILE] -- CMD ARGS...\n";

/* ---- growable series --------------------------------------------------------------------------------- */

typedef struct {
    double *v;
    size_t n, cap;
} series_t;

static void push(series_t *s, double x) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        double *v = realloc(s->v, cap * sizeof(double));
        if (!v) return; /* out of memory: drop samples rather than disturb the child */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

/* ---- small helpers ----------------------------------------------------------------------------------- */

static void die_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("dlprobe: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Re-read an already opened /proc or /sys file from the start; returns bytes read or -1. */
static ssize_t reread(int fd, char *buf, size_t size) {
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, size - 1, 0);
    if (n < 0) return -1;
    buf[n] = '\0';
    return n;
}

static int read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = reread(fd, buf, size);
    close(fd);
    if (n < 0) return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
    return (int)n;
}

static int read_long(int fd, long long *out) {
    char buf[64];
    if (reread(fd, buf, sizeof buf) <= 0) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || end == buf) return -1;
    *out = v;
    return 0;
}

/* "VmHWM:\t  1234 kB" -> bytes; -1 when the line is missing (a zombie has no Vm* lines). */
static long long status_kb(const char *status, const char *key) {
    const char *p = strstr(status, key);
    if (!p) return -1;
    p += strlen(key);
    while (*p == ' ' || *p == '\t') p++;
    return strtoll(p, NULL, 10) * 1024;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_series(FILE *f, const series_t *s, int integers) {
    fputc('[', f);
    for (size_t i = 0; i < s->n; i++) {
        if (i) fputc(',', f);
        if (s->v[i] != s->v[i]) fputs("null", f); /* NaN: no reading at that sample */
        else if (integers) fprintf(f, "%.0f", s->v[i]);
        else fprintf(f, "%.6f", s->v[i]);
    }
    fputc(']', f);
}

/* "0-3,6" -> mask; returns the number of CPUs or -1 on a syntax error. */
static int parse_cpu_list(const char *text, cpu_set_t *set) {
    CPU_ZERO(set);
    int count = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10);
        if (end == p || lo < 0 || lo >= MAX_CPUS) return -1;
        long hi = lo;
        p = end;
        if (*p == '-') {
            hi = strtol(p + 1, &end, 10);
            if (end == p + 1 || hi < lo || hi >= MAX_CPUS) return -1;
            p = end;
        }
        for (long c = lo; c <= hi; c++) {
            if (!CPU_ISSET(c, set)) count++;
            CPU_SET(c, set);
        }
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return count;
}

static void json_cpu_set(FILE *f, const cpu_set_t *set) {
    fputc('[', f);
    int first = 1;
    for (int c = 0; c < MAX_CPUS; c++)
        if (CPU_ISSET(c, set)) {
            fprintf(f, first ? "%d" : ",%d", c);
            first = 0;
        }
    fputc(']', f);
}

/* ---- what is sampled --------------------------------------------------------------------------------- */

typedef struct {
    int cpu;
    int fd; /* scaling_cur_freq, kept open */
    series_t khz;
} freq_t;

typedef struct {
    char zone[256];
    char type[MAX_FIELD];
    int fd;
    series_t c;
} zone_t;

typedef struct {
    char name[256];
    int current_fd, voltage_fd;
    series_t current, voltage;
} battery_t;

static int cmp_zone(const void *a, const void *b) {
    const zone_t *za = a, *zb = b;
    size_t la = strlen(za->zone), lb = strlen(zb->zone);
    return la != lb ? (la < lb ? -1 : 1) : strcmp(za->zone, zb->zone); /* thermal_zone2 before thermal_zone10 */
}

static int open_zones(zone_t *zones) {
    int n = 0;
    DIR *d = opendir("/sys/class/thermal");
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_ZONES) {
        if (strncmp(e->d_name, "thermal_zone", 12) != 0) continue;
        char path[512], type[MAX_FIELD];
        snprintf(path, sizeof path, "/sys/class/thermal/%s/type", e->d_name);
        if (read_small(path, type, sizeof type) <= 0) continue;
        snprintf(path, sizeof path, "/sys/class/thermal/%s/temp", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        long long probe;
        if (fd < 0 || read_long(fd, &probe) != 0) { /* some zones exist but cannot be read: skip them */
            if (fd >= 0) close(fd);
            continue;
        }
        zone_t *z = &zones[n++];
        memset(z, 0, sizeof *z);
        snprintf(z->zone, sizeof z->zone, "%s", e->d_name);
        snprintf(z->type, sizeof z->type, "%s", type);
        z->fd = fd;
    }
    closedir(d);
    qsort(zones, n, sizeof *zones, cmp_zone);
    return n;
}

static int open_battery(battery_t *b) {
    DIR *d = opendir("/sys/class/power_supply");
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) && !found) {
        if (e->d_name[0] == '.') continue;
        char path[512], type[MAX_FIELD];
        snprintf(path, sizeof path, "/sys/class/power_supply/%s/type", e->d_name);
        if (read_small(path, type, sizeof type) <= 0 || strcmp(type, "Battery") != 0) continue;
        memset(b, 0, sizeof *b);
        snprintf(b->name, sizeof b->name, "%s", e->d_name);
        snprintf(path, sizeof path, "/sys/class/power_supply/%s/current_now", e->d_name);
        b->current_fd = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof path, "/sys/class/power_supply/%s/voltage_now", e->d_name);
        b->voltage_fd = open(path, O_RDONLY | O_CLOEXEC);
        found = b->current_fd >= 0 || b->voltage_fd >= 0;
    }
    closedir(d);
    return found;
}

/* ---- main -------------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    const char *cpus_arg = NULL, *out_path = NULL;
    long interval_ms = 10, slow_ms = 500;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--cpus") == 0 || strcmp(a, "--interval-ms") == 0 || strcmp(a, "--slow-interval-ms") == 0 ||
            strcmp(a, "--out") == 0) {
            if (!value) die_usage("%s needs a value\n%s", a, USAGE);
            i++;
            if (strcmp(a, "--cpus") == 0) cpus_arg = value;
            else if (strcmp(a, "--out") == 0) out_path = value;
            else {
                char *end;
                long v = strtol(value, &end, 10);
                if (*end || v < 1 || v > 3600000) die_usage("%s: '%s' is not allowed; allowed: 1 to 3600000 (milliseconds)", a, value);
                if (strcmp(a, "--interval-ms") == 0) interval_ms = v;
                else slow_ms = v;
            }
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else {
            die_usage("unknown option '%s'; allowed: --cpus, --interval-ms, --slow-interval-ms, --out, then -- CMD\n%s", a, USAGE);
        }
    }
    if (i >= argc) die_usage("no command given\n%s", USAGE);
    char **cmd = &argv[i];

    cpu_set_t allowed, pinned, probe_set;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) CPU_ZERO(&allowed);
    pinned = allowed;
    int pin = 0;
    if (cpus_arg) {
        if (parse_cpu_list(cpus_arg, &pinned) <= 0)
            die_usage("--cpus: '%s' is not allowed; allowed: a CPU list like 0,2 or 4-7", cpus_arg);
        for (int c = 0; c < MAX_CPUS; c++)
            if (CPU_ISSET(c, &pinned) && !CPU_ISSET(c, &allowed))
                die_usage("--cpus: CPU %d is not available to this process", c);
        pin = 1;
    }
    /* Where dlprobe itself runs: the allowed CPUs outside the pinned set, if there is one. */
    CPU_ZERO(&probe_set);
    int free_cpus = 0;
    for (int c = 0; c < MAX_CPUS; c++)
        if (CPU_ISSET(c, &allowed) && !CPU_ISSET(c, &pinned)) {
            CPU_SET(c, &probe_set);
            free_cpus++;
        }
    if (!free_cpus) probe_set = allowed;

    FILE *out = stderr;
    if (out_path && strcmp(out_path, "-") != 0) {
        /* Opened before the fork (O_CLOEXEC keeps it from the child) so a bad path fails before anything runs. */
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || !(out = fdopen(fd, "w"))) die_usage("--out: cannot write %s: %s", out_path, strerror(errno));
    }

    /* SIGCHLD and the signals we forward are blocked and collected with sigtimedwait in the loop. */
    sigset_t waitset, oldset;
    sigemptyset(&waitset);
    int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    sigaddset(&waitset, SIGCHLD);
    for (size_t k = 0; k < sizeof forwarded / sizeof *forwarded; k++) sigaddset(&waitset, forwarded[k]);
    sigprocmask(SIG_BLOCK, &waitset, &oldset);

    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) {
        perror("dlprobe: pipe2");
        return 2;
    }
    double t0 = now_s();
    struct timeval wall0;
    gettimeofday(&wall0, NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("dlprobe: fork");
        return 2;
    }
    if (pid == 0) {
        close(errpipe[0]);
        /* If dlprobe is killed (a controller's timeout, a test), the runner must not live on unobserved. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        sigprocmask(SIG_SETMASK, &oldset, NULL);
        if (pin && sched_setaffinity(0, sizeof pinned, &pinned) != 0) {
            int err = errno;
            (void)!write(errpipe[1], &err, sizeof err);
            _exit(127);
        }
        execvp(cmd[0], cmd);
        int err = errno;
        (void)!write(errpipe[1], &err, sizeof err);
        _exit(127);
    }
    close(errpipe[1]);
    int child_errno = 0;
    ssize_t got = read(errpipe[0], &child_errno, sizeof child_errno); /* EOF at exec: it started */
    close(errpipe[0]);
    if (got == (ssize_t)sizeof child_errno) {
        fprintf(stderr, "dlprobe: cannot run '%s': %s\n", cmd[0], strerror(child_errno));
        waitpid(pid, NULL, 0);
        return 127;
    }
    if (free_cpus) sched_setaffinity(0, sizeof probe_set, &probe_set);

    /* Open everything sampled once; re-read with pread at each sample. */
    char path[512];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int status_fd = open(path, O_RDONLY | O_CLOEXEC);
    freq_t *freqs = calloc(MAX_CPUS, sizeof *freqs);
    int nfreq = 0;
    for (int c = 0; c < MAX_CPUS && freqs; c++) {
        if (!CPU_ISSET(c, &pinned)) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq", c);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        freqs[nfreq].cpu = c;
        freqs[nfreq].fd = fd;
        nfreq++;
    }
    zone_t *zones = calloc(MAX_ZONES, sizeof *zones);
    int nzones = zones ? open_zones(zones) : 0;
    battery_t battery;
    int have_battery = open_battery(&battery);

    series_t t_fast = {0}, rss = {0}, hwm = {0}, t_slow = {0};
    long long hwm_max = -1, rss_max = -1;
    double last_status_t = 0;
    char status[4096];
    double next_fast = t0, next_slow = t0;
    int wstatus = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    int done = 0;
    int forwarded_signal = 0;
    while (!done) {
        double now = now_s();
        if (now >= next_fast) {
            push(&t_fast, now - t0);
            long long r = -1, h = -1;
            if (reread(status_fd, status, sizeof status) > 0) {
                r = status_kb(status, "VmRSS:");
                h = status_kb(status, "VmHWM:");
            }
            push(&rss, r >= 0 ? (double)r : NAN);
            push(&hwm, h >= 0 ? (double)h : NAN);
            if (h > hwm_max) hwm_max = h;
            if (r > rss_max) rss_max = r;
            if (h >= 0) last_status_t = now - t0;
            for (int k = 0; k < nfreq; k++) {
                long long khz;
                push(&freqs[k].khz, read_long(freqs[k].fd, &khz) == 0 ? (double)khz : NAN);
            }
            /* Skip missed ticks instead of bursting to catch up. */
            do next_fast += interval_ms / 1000.0; while (next_fast <= now);
        }
        if (now >= next_slow && (nzones || have_battery)) {
            push(&t_slow, now - t0);
            for (int k = 0; k < nzones; k++) {
                long long milli;
                push(&zones[k].c, read_long(zones[k].fd, &milli) == 0 ? milli / 1000.0 : NAN);
            }
            if (have_battery) {
                long long v;
                push(&battery.current, read_long(battery.current_fd, &v) == 0 ? (double)v : NAN);
                push(&battery.voltage, read_long(battery.voltage_fd, &v) == 0 ? (double)v : NAN);
            }
            do next_slow += slow_ms / 1000.0; while (next_slow <= now);
        }
        double next = (nzones || have_battery) && next_slow < next_fast ? next_slow : next_fast;
        double wait = next - now_s();
        if (wait < 0) wait = 0;
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        int sig = sigtimedwait(&waitset, NULL, &ts);
        if (sig == SIGCHLD || sig < 0) {
            pid_t w = wait4(pid, &wstatus, WNOHANG, &ru);
            if (w == pid) done = 1;
        } else if (sig > 0) {
            kill(pid, sig); /* pass Ctrl-C, TERM, HUP... to the child; its exit ends dlprobe */
            forwarded_signal = sig;
        }
    }
    double wall = now_s() - t0;

    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    double probe_cpu = self.ru_utime.tv_sec + self.ru_utime.tv_usec * 1e-6 + self.ru_stime.tv_sec +
                       self.ru_stime.tv_usec * 1e-6;
    int exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    int term_signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
    /* ru_maxrss is in kilobytes on Linux (bytes on Darwin, where dlprobe is not built). */
    long long maxrss = (long long)ru.ru_maxrss * 1024;

    fprintf(out, "{\"dlprobe\":%d,\"argv\":[", DLPROBE_FORMAT);
    for (char **a = cmd; *a; a++) {
        if (a != cmd) fputc(',', out);
        json_string(out, *a);
    }
    /* started_monotonic_s: t0 on CLOCK_MONOTONIC, the clock runners time with (steady_clock, perf_counter), so the
     * controller can place these samples on the runner's own timeline. */
    fprintf(out, "],\"pid\":%d,\"started_unix_s\":%.3f,\"started_monotonic_s\":%.6f,\"wall_s\":%.6f,", (int)pid,
            wall0.tv_sec + wall0.tv_usec * 1e-6, t0, wall);
    fputs("\"cpus\":", out);
    if (pin) json_cpu_set(out, &pinned);
    else fputs("null", out);
    fputs(",\"probe_cpus\":", out);
    json_cpu_set(out, &probe_set);
    fprintf(out, ",\"probe_shares_cpus\":%s,\"interval_ms\":%ld,\"slow_interval_ms\":%ld,",
            free_cpus ? "false" : "true", interval_ms, slow_ms);
    fprintf(out, "\"exit\":{\"code\":%d,\"signal\":%d,\"forwarded_signal\":%d},", exit_code, term_signal,
            forwarded_signal);
    fprintf(out,
            "\"rusage\":{\"maxrss_bytes\":%lld,\"utime_s\":%.6f,\"stime_s\":%.6f,\"minflt\":%ld,\"majflt\":%ld,"
            "\"nvcsw\":%ld,\"nivcsw\":%ld},",
            maxrss, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6,
            ru.ru_minflt, ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw);
    fputs("\"peak\":{\"ru_maxrss_bytes\":", out);
    fprintf(out, "%lld,\"vmhwm_bytes\":", maxrss);
    if (hwm_max >= 0) fprintf(out, "%lld", hwm_max);
    else fputs("null", out);
    fputs(",\"vmrss_max_bytes\":", out);
    if (rss_max >= 0) fprintf(out, "%lld", rss_max);
    else fputs("null", out);
    /* How stale the last VmHWM reading is: the child may have grown after it, before exiting. */
    fprintf(out, ",\"vmhwm_last_read_s\":%.6f},", last_status_t);
    fprintf(out, "\"probe\":{\"cpu_s\":%.6f,\"cpu_s_per_s\":%.6f,\"fast_samples\":%zu,\"slow_samples\":%zu},",
            probe_cpu, wall > 0 ? probe_cpu / wall : 0.0, t_fast.n, t_slow.n);
    fputs("\"samples\":{\"t_s\":", out);
    json_series(out, &t_fast, 0);
    fputs(",\"vmrss_bytes\":", out);
    json_series(out, &rss, 1);
    fputs(",\"vmhwm_bytes\":", out);
    json_series(out, &hwm, 1);
    fputs(",\"freq_khz\":{", out);
    for (int k = 0; k < nfreq; k++) {
        fprintf(out, k ? ",\"%d\":" : "\"%d\":", freqs[k].cpu);
        json_series(out, &freqs[k].khz, 1);
    }
    fputs("}},\"slow_samples\":{\"t_s\":", out);
    json_series(out, &t_slow, 0);
    fputs(",\"temp_c\":{", out);
    for (int k = 0; k < nzones; k++) {
        if (k) fputc(',', out);
        /* Zones are keyed by type (vendor strings); a repeated type gets its zone name appended. */
        int dup = 0;
        for (int j = 0; j < k; j++) dup |= strcmp(zones[j].type, zones[k].type) == 0;
        char key[MAX_FIELD + 300];
        if (dup) snprintf(key, sizeof key, "%s:%s", zones[k].type, zones[k].zone);
        else snprintf(key, sizeof key, "%s", zones[k].type);
        json_string(out, key);
        fputc(':', out);
        json_series(out, &zones[k].c, 0);
    }
    fputs("},\"battery\":", out);
    if (have_battery) {
        /* Raw sysfs values: documented as µA and µV, but vendors differ in sign and scale (calibrate per device). */
        fputs("{\"supply\":", out);
        json_string(out, battery.name);
        fputs(",\"current_now\":", out);
        json_series(out, &battery.current, 1);
        fputs(",\"voltage_now\":", out);
        json_series(out, &battery.voltage, 1);
        fputc('}', out);
    } else {
        fputs("null", out);
    }
    fputs("}}\n", out);
    fflush(out);
    if (out != stderr) fclose(out);
    return term_signal ? 128 + term_signal : exit_code;
}
