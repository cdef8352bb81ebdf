/*
 * Fake NVML: a test stand-in for the NVIDIA driver's libnvidia-ml.so.1.
 *
 * Never shipped. It implements the NVML entry points pynvml calls for the
 * appliance, with the same struct layouts as pynvml's ctypes definitions, and
 * answers from a text file named by $FAKE_NVML_CONFIG. The file is re-read on
 * every call, so a test can change a GPU while the code under test runs.
 * Format: see README.md next to this file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t; /* an enum in nvml.h: int-sized in the ABI */

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define MAX_GPUS 16
#define MAX_PROCS 16
#define MAX_FAILS 8
#define MAX_MIGS 64
#define MAX_MIG_PER_GPU 7 /* what an A100 or H100 reports as its maximum */
#define STR_LEN 96

/* Handles are addresses in this array; the index is the GPU's position. */
struct nvmlDevice_st {
    char unused;
};
typedef struct nvmlDevice_st *nvmlDevice_t;
static struct nvmlDevice_st handles[MAX_GPUS];
/* MIG devices' handles: addresses in another array, as real MIG handles differ from GPUs'. */
static struct nvmlDevice_st mig_handles[MAX_MIGS];

/* Layouts match pynvml's c_nvmlMemory_t, c_nvmlMemory_v2_t, c_nvmlUtilization_t,
 * nvmlPciInfo_t and c_nvmlProcessInfo_v3_t (= v2_t) exactly. */
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))
typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

struct fake_proc {
    unsigned int pid;
    unsigned long long mem;
};
struct fake_fail {
    char what[16];
    int code;
};
struct fake_gpu {
    unsigned int minor;
    char uuid[STR_LEN], name[STR_LEN], pci[32];
    unsigned int domain, bus, device, function, pci_device_id;
    unsigned long long mem_total, mem_used, mem_reserved;
    unsigned int util_gpu, util_mem;
    unsigned int temp_c, power_mw; /* GPU temperature (Celsius), power draw (milliwatts) */
    int mig; /* 0, 1, or -1: not supported */
    int lost;
    struct fake_proc procs[MAX_PROCS];
    unsigned int nprocs;
    struct fake_fail fails[MAX_FAILS];
    unsigned int nfails;
};
/* A MIG device: one compute instance of one GPU instance on a parent GPU in MIG mode. */
struct fake_mig {
    unsigned int gpu; /* the parent's position */
    char uuid[STR_LEN], profile[32];
    unsigned long long mem_total, mem_used;
    unsigned int gi, ci;
    int util; /* -1: not reported (what drivers do for MIG devices) */
};
struct fake_config {
    int init_error;
    char driver[80];
    unsigned int count;
    struct fake_gpu gpus[MAX_GPUS];
    unsigned int nmigs;
    struct fake_mig migs[MAX_MIGS];
};

static int init_count; /* nvmlInit / nvmlShutdown reference count */

static int bad(const char *path, int line, const char *what, const char *tok)
{
    fprintf(stderr, "fake_nvml: %s:%d: %s: %s\n", path, line, what, tok);
    return NVML_ERROR_UNKNOWN;
}

static int parse_ull(const char *s, unsigned long long *out)
{
    char *end;
    if (*s == '\0' || *s == '-')
        return 0;
    *out = strtoull(s, &end, 0);
    return *end == '\0';
}

static int parse_uint(const char *s, unsigned int *out)
{
    unsigned long long v;
    if (!parse_ull(s, &v) || v > 0xFFFFFFFFull)
        return 0;
    *out = (unsigned int)v;
    return 1;
}

static int copy_str(char *dst, size_t size, const char *src)
{
    if (strlen(src) >= size)
        return 0;
    strcpy(dst, src);
    return 1;
}

static void gpu_defaults(struct fake_gpu *g, unsigned int index)
{
    memset(g, 0, sizeof(*g));
    g->minor = index;
    snprintf(g->uuid, sizeof(g->uuid), "GPU-fa4e0000-0000-0000-0000-%012x", index);
    strcpy(g->name, "NVIDIA A100-SXM4-80GB");
    g->bus = index + 1;
    g->pci_device_id = 0x20B210DE;
    g->mem_total = 85899345920ull;
    g->temp_c = 35;
    g->power_mw = 60000;
}

/* procs=PID:BYTES,PID:BYTES */
static int parse_procs(struct fake_gpu *g, char *v)
{
    char *save = NULL;
    for (char *item = strtok_r(v, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        if (!colon || g->nprocs >= MAX_PROCS)
            return 0;
        *colon = '\0';
        struct fake_proc *p = &g->procs[g->nprocs++];
        if (!parse_uint(item, &p->pid) || !parse_ull(colon + 1, &p->mem))
            return 0;
    }
    return 1;
}

/* fail=QUERY[:CODE],... (CODE defaults to NVML_ERROR_UNKNOWN) */
static int parse_fails(struct fake_gpu *g, char *v)
{
    char *save = NULL;
    for (char *item = strtok_r(v, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (g->nfails >= MAX_FAILS)
            return 0;
        struct fake_fail *f = &g->fails[g->nfails++];
        char *colon = strchr(item, ':');
        unsigned int code = NVML_ERROR_UNKNOWN;
        if (colon) {
            *colon = '\0';
            if (!parse_uint(colon + 1, &code))
                return 0;
        }
        if (!copy_str(f->what, sizeof(f->what), item))
            return 0;
        f->code = (int)code;
    }
    return 1;
}

static int parse_gpu_key(struct fake_gpu *g, char *key, char *v)
{
    if (!strcmp(key, "index"))
        return 1; /* checked by the caller */
    if (!strcmp(key, "minor"))
        return parse_uint(v, &g->minor);
    if (!strcmp(key, "uuid"))
        return copy_str(g->uuid, sizeof(g->uuid), v);
    if (!strcmp(key, "name")) {
        if (!copy_str(g->name, sizeof(g->name), v))
            return 0;
        for (char *c = g->name; *c; c++)
            if (*c == '_')
                *c = ' ';
        return 1;
    }
    if (!strcmp(key, "mem_total"))
        return parse_ull(v, &g->mem_total);
    if (!strcmp(key, "mem_used"))
        return parse_ull(v, &g->mem_used);
    if (!strcmp(key, "mem_reserved"))
        return parse_ull(v, &g->mem_reserved);
    if (!strcmp(key, "util_gpu"))
        return parse_uint(v, &g->util_gpu) && g->util_gpu <= 100;
    if (!strcmp(key, "util_mem"))
        return parse_uint(v, &g->util_mem) && g->util_mem <= 100;
    if (!strcmp(key, "temp"))
        return parse_uint(v, &g->temp_c) && g->temp_c <= 200;
    if (!strcmp(key, "power"))
        return parse_uint(v, &g->power_mw);
    if (!strcmp(key, "pci_device_id"))
        return parse_uint(v, &g->pci_device_id);
    if (!strcmp(key, "pci")) {
        char tail;
        return copy_str(g->pci, sizeof(g->pci), v) &&
               sscanf(v, "%x:%x:%x.%x%c", &g->domain, &g->bus, &g->device, &g->function, &tail) == 4;
    }
    if (!strcmp(key, "mig")) {
        if (!strcmp(v, "na")) {
            g->mig = -1;
            return 1;
        }
        return (!strcmp(v, "0") || !strcmp(v, "1")) && (g->mig = atoi(v), 1);
    }
    if (!strcmp(key, "lost"))
        return (!strcmp(v, "0") || !strcmp(v, "1")) && (g->lost = atoi(v), 1);
    if (!strcmp(key, "procs"))
        return parse_procs(g, v);
    if (!strcmp(key, "fail"))
        return parse_fails(g, v);
    return 0;
}

static int parse_gpu(struct fake_config *c, char **save, const char *path, int line)
{
    if (c->count >= MAX_GPUS)
        return bad(path, line, "too many GPUs", "gpu");
    struct fake_gpu *g = &c->gpus[c->count];
    gpu_defaults(g, c->count);
    for (char *tok = strtok_r(NULL, " \t\r\n", save); tok; tok = strtok_r(NULL, " \t\r\n", save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return bad(path, line, "expected key=value", tok);
        *eq = '\0';
        unsigned int idx;
        if (!strcmp(tok, "index") && (!parse_uint(eq + 1, &idx) || idx != c->count))
            return bad(path, line, "index must count up from 0 in file order", eq + 1);
        if (!parse_gpu_key(g, tok, eq + 1))
            return bad(path, line, "bad gpu key or value", tok);
    }
    if (g->pci[0] == '\0')
        snprintf(g->pci, sizeof(g->pci), "%08X:%02X:%02X.%X", g->domain, g->bus, g->device, g->function);
    if (g->mem_used + g->mem_reserved > g->mem_total)
        return bad(path, line, "mem_used + mem_reserved > mem_total", g->uuid);
    c->count++;
    return NVML_SUCCESS;
}

/* mig gpu=PARENT profile=1g.10gb gi=N ci=N uuid=MIG-... mem_total=BYTES mem_used=BYTES */
static int parse_mig(struct fake_config *c, char **save, const char *path, int line)
{
    if (c->nmigs >= MAX_MIGS)
        return bad(path, line, "too many MIG devices", "mig");
    struct fake_mig *m = &c->migs[c->nmigs];
    memset(m, 0, sizeof(*m));
    m->gpu = 0xFFFFFFFFu;
    m->util = -1;
    strcpy(m->profile, "1g.10gb");
    m->mem_total = 10737418240ull;
    snprintf(m->uuid, sizeof(m->uuid), "MIG-fa4e0000-0000-0000-0000-%012x", c->nmigs);
    for (char *tok = strtok_r(NULL, " \t\r\n", save); tok; tok = strtok_r(NULL, " \t\r\n", save)) {
        char *eq = strchr(tok, '='), *v;
        unsigned int u;
        if (!eq)
            return bad(path, line, "expected key=value", tok);
        *eq = '\0';
        v = eq + 1;
        int ok = !strcmp(tok, "gpu")         ? parse_uint(v, &m->gpu)
                 : !strcmp(tok, "uuid")      ? copy_str(m->uuid, sizeof(m->uuid), v)
                 : !strcmp(tok, "profile")   ? copy_str(m->profile, sizeof(m->profile), v)
                 : !strcmp(tok, "gi")        ? parse_uint(v, &m->gi)
                 : !strcmp(tok, "ci")        ? parse_uint(v, &m->ci)
                 : !strcmp(tok, "mem_total") ? parse_ull(v, &m->mem_total)
                 : !strcmp(tok, "mem_used")  ? parse_ull(v, &m->mem_used)
                 : !strcmp(tok, "util_gpu")  ? parse_uint(v, &u) && u <= 100 && (m->util = (int)u, 1)
                                             : 0;
        if (!ok)
            return bad(path, line, "bad mig key or value", tok);
    }
    if (m->gpu >= c->count || c->gpus[m->gpu].mig != 1)
        return bad(path, line, "gpu= must name an earlier gpu line with mig=1", "gpu");
    if (m->mem_used > m->mem_total)
        return bad(path, line, "mem_used > mem_total", m->uuid);
    c->nmigs++;
    return NVML_SUCCESS;
}

/* Missing file: the driver is "not loaded"; malformed file: loud NVML_ERROR_UNKNOWN. */
static nvmlReturn_t load_config(struct fake_config *c)
{
    const char *path = getenv("FAKE_NVML_CONFIG");
    memset(c, 0, sizeof(*c));
    strcpy(c->driver, "550.54.14");
    if (!path || !*path)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    FILE *f = fopen(path, "r");
    if (!f)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    char buf[4096];
    int line = 0, rc = NVML_SUCCESS;
    while (rc == NVML_SUCCESS && fgets(buf, sizeof(buf), f)) {
        line++;
        char *hash = strchr(buf, '#'), *save = NULL;
        if (hash)
            *hash = '\0';
        char *tok = strtok_r(buf, " \t\r\n", &save);
        if (!tok)
            continue;
        if (!strcmp(tok, "driver")) {
            char *v = strtok_r(NULL, " \t\r\n", &save);
            if (!v || !copy_str(c->driver, sizeof(c->driver), v))
                rc = bad(path, line, "bad driver version", v ? v : "(none)");
        } else if (!strncmp(tok, "init_error=", 11)) {
            unsigned int code;
            if (!parse_uint(tok + 11, &code))
                rc = bad(path, line, "bad init_error", tok);
            c->init_error = (int)code;
        } else if (!strcmp(tok, "gpu")) {
            rc = parse_gpu(c, &save, path, line);
        } else if (!strcmp(tok, "mig")) {
            rc = parse_mig(c, &save, path, line);
        } else {
            rc = bad(path, line, "unknown line", tok);
        }
    }
    fclose(f);
    return rc;
}

static nvmlReturn_t begin(struct fake_config *c)
{
    if (__atomic_load_n(&init_count, __ATOMIC_SEQ_CST) <= 0)
        return NVML_ERROR_UNINITIALIZED;
    return load_config(c);
}

static int failing(const struct fake_gpu *g, const char *what)
{
    for (unsigned int i = 0; i < g->nfails; i++)
        if (!strcmp(g->fails[i].what, what))
            return g->fails[i].code;
    return NVML_SUCCESS;
}

/* Common prologue of every per-device query: initialised, valid handle, not lost. */
static nvmlReturn_t device(struct fake_config *c, nvmlDevice_t h, const char *what, struct fake_gpu **g)
{
    nvmlReturn_t rc = begin(c);
    if (rc)
        return rc;
    if (h < handles || h >= handles + MAX_GPUS || (unsigned int)(h - handles) >= c->count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *g = &c->gpus[h - handles];
    if ((*g)->lost)
        return NVML_ERROR_GPU_IS_LOST;
    return failing(*g, what);
}

static int is_mig(nvmlDevice_t h) { return h >= mig_handles && h < mig_handles + MAX_MIGS; }

/* The prologue of a query a MIG device answers too. */
static nvmlReturn_t mig_device(struct fake_config *c, nvmlDevice_t h, struct fake_mig **m)
{
    nvmlReturn_t rc = begin(c);
    if (rc)
        return rc;
    if ((unsigned int)(h - mig_handles) >= c->nmigs)
        return NVML_ERROR_INVALID_ARGUMENT;
    *m = &c->migs[h - mig_handles];
    return c->gpus[(*m)->gpu].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

static nvmlReturn_t put_str(char *dst, unsigned int len, const char *src)
{
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) >= len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    struct fake_config c;
    (void)flags;
    nvmlReturn_t rc = load_config(&c);
    if (rc)
        return rc;
    if (c.init_error)
        return c.init_error;
    __atomic_add_fetch(&init_count, 1, __ATOMIC_SEQ_CST);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void)
{
    int n = __atomic_load_n(&init_count, __ATOMIC_SEQ_CST);
    do {
        if (n <= 0)
            return NVML_ERROR_UNINITIALIZED;
    } while (!__atomic_compare_exchange_n(&init_count, &n, n - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return NVML_SUCCESS;
}

/* Test-only: lets a test check that every init was matched by a shutdown. */
int fake_nvml_init_count(void) { return __atomic_load_n(&init_count, __ATOMIC_SEQ_CST); }

const char *nvmlErrorString(nvmlReturn_t rc)
{
    switch (rc) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    struct fake_config c;
    nvmlReturn_t rc = begin(&c);
    return rc ? rc : put_str(version, length, c.driver);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    struct fake_config c;
    nvmlReturn_t rc = begin(&c);
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = c.count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    struct fake_config c;
    nvmlReturn_t rc = begin(&c);
    if (rc)
        return rc;
    if (!device || index >= c.count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (c.gpus[index].lost)
        return NVML_ERROR_GPU_IS_LOST;
    if ((rc = failing(&c.gpus[index], "handle")))
        return rc;
    *device = &handles[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    struct fake_config c;
    nvmlReturn_t rc = begin(&c);
    if (rc)
        return rc;
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned int i = 0; i < c.count; i++) {
        if (strcmp(c.gpus[i].uuid, uuid))
            continue;
        if (c.gpus[i].lost)
            return NVML_ERROR_GPU_IS_LOST;
        if ((rc = failing(&c.gpus[i], "handle")))
            return rc;
        *device = &handles[i];
        return NVML_SUCCESS;
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *name, unsigned int length)
{
    struct fake_config c;
    struct fake_gpu *g;
    if (is_mig(h)) { /* as the driver names them: "NVIDIA A100-SXM4-80GB MIG 1g.10gb" */
        struct fake_mig *m;
        char full[2 * STR_LEN];
        nvmlReturn_t rc = mig_device(&c, h, &m);
        if (rc)
            return rc;
        snprintf(full, sizeof(full), "%s MIG %s", c.gpus[m->gpu].name, m->profile);
        return put_str(name, length, full);
    }
    nvmlReturn_t rc = device(&c, h, "name", &g);
    return rc ? rc : put_str(name, length, g->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *uuid, unsigned int length)
{
    struct fake_config c;
    struct fake_gpu *g;
    if (is_mig(h)) {
        struct fake_mig *m;
        nvmlReturn_t rc = mig_device(&c, h, &m);
        return rc ? rc : put_str(uuid, length, m->uuid);
    }
    nvmlReturn_t rc = device(&c, h, "uuid", &g);
    return rc ? rc : put_str(uuid, length, g->uuid);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned int *minor)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "minor", &g);
    if (rc)
        return rc;
    if (!minor)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minor = g->minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t h, nvmlPciInfo_t *pci)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "pci", &g);
    if (rc)
        return rc;
    if (!pci)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof(*pci));
    snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04X:%02X:%02X.%X",
             g->domain & 0xFFFF, g->bus & 0xFF, g->device & 0xFF, g->function & 0xF);
    pci->domain = g->domain;
    pci->bus = g->bus;
    pci->device = g->device;
    pci->pciDeviceId = g->pci_device_id;
    pci->pciSubSystemId = 0x145F10DE;
    strcpy(pci->busId, g->pci);
    return NVML_SUCCESS;
}

/* v1 "used" includes memory reserved by the driver, as real NVML does. */
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *mem)
{
    struct fake_config c;
    struct fake_gpu *g;
    if (is_mig(h)) {
        struct fake_mig *m;
        nvmlReturn_t rc = mig_device(&c, h, &m);
        if (rc || !mem)
            return rc ? rc : NVML_ERROR_INVALID_ARGUMENT;
        mem->total = m->mem_total;
        mem->used = m->mem_used;
        mem->free = m->mem_total - m->mem_used;
        return NVML_SUCCESS;
    }
    nvmlReturn_t rc = device(&c, h, "mem", &g);
    if (rc)
        return rc;
    if (!mem)
        return NVML_ERROR_INVALID_ARGUMENT;
    mem->total = g->mem_total;
    mem->used = g->mem_used + g->mem_reserved;
    mem->free = g->mem_total - mem->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *mem)
{
    struct fake_config c;
    struct fake_gpu *g;
    if (is_mig(h)) {
        struct fake_mig *m;
        nvmlReturn_t rc = mig_device(&c, h, &m);
        if (rc || !mem)
            return rc ? rc : NVML_ERROR_INVALID_ARGUMENT;
        if (mem->version != nvmlMemory_v2)
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        mem->total = m->mem_total;
        mem->reserved = 0;
        mem->used = m->mem_used;
        mem->free = m->mem_total - m->mem_used;
        return NVML_SUCCESS;
    }
    nvmlReturn_t rc = device(&c, h, "mem_v2", &g);
    if (rc)
        return rc;
    if (!mem)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (mem->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    mem->total = g->mem_total;
    mem->reserved = g->mem_reserved;
    mem->used = g->mem_used;
    mem->free = g->mem_total - g->mem_reserved - g->mem_used;
    return NVML_SUCCESS;
}

/* Real NVML does not report utilization for a GPU in MIG mode. */
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, nvmlUtilization_t *util)
{
    struct fake_config c;
    struct fake_gpu *g;
    if (is_mig(h)) { /* nor for a MIG device, unless the line says util_gpu= */
        struct fake_mig *m;
        nvmlReturn_t rc = mig_device(&c, h, &m);
        if (rc || m->util < 0)
            return rc ? rc : NVML_ERROR_NOT_SUPPORTED;
        if (!util)
            return NVML_ERROR_INVALID_ARGUMENT;
        util->gpu = (unsigned int)m->util;
        util->memory = 0;
        return NVML_SUCCESS;
    }
    nvmlReturn_t rc = device(&c, h, "util", &g);
    if (rc)
        return rc;
    if (!util)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig == 1)
        return NVML_ERROR_NOT_SUPPORTED;
    util->gpu = g->util_gpu;
    util->memory = g->util_mem;
    return NVML_SUCCESS;
}

/* Only the GPU die sensor (NVML_TEMPERATURE_GPU = 0) exists. */
nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t h, int sensor, unsigned int *temp)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "temp", &g);
    if (rc)
        return rc;
    if (!temp || sensor != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    *temp = g->temp_c;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *power)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "power", &g);
    if (rc)
        return rc;
    if (!power)
        return NVML_ERROR_INVALID_ARGUMENT;
    *power = g->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *count, nvmlProcessInfo_t *infos)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "procs", &g);
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (*count < g->nprocs || (!infos && g->nprocs)) {
        *count = g->nprocs;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = g->nprocs;
    for (unsigned int i = 0; i < g->nprocs; i++) {
        infos[i].pid = g->procs[i].pid;
        infos[i].usedGpuMemory = g->procs[i].mem;
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *current, unsigned int *pending)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "mig", &g);
    if (rc)
        return rc;
    if (!current || !pending)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned int)g->mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t h, unsigned int *count)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "mig", &g);
    if (rc)
        return rc;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    *count = MAX_MIG_PER_GPU;
    return NVML_SUCCESS;
}

/* The index-th MIG device of a parent; NOT_FOUND for a slot without one, as the driver. */
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t h, unsigned int index, nvmlDevice_t *mig)
{
    struct fake_config c;
    struct fake_gpu *g;
    nvmlReturn_t rc = device(&c, h, "mig", &g);
    if (rc)
        return rc;
    if (!mig || index >= MAX_MIG_PER_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g->mig != 1)
        return NVML_ERROR_NOT_SUPPORTED;
    unsigned int parent = (unsigned int)(h - handles), seen = 0;
    for (unsigned int i = 0; i < c.nmigs; i++) {
        if (c.migs[i].gpu != parent)
            continue;
        if (seen++ == index) {
            *mig = &mig_handles[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* A MIG device's GPU instance id (gi) or compute instance id (ci). */
static nvmlReturn_t mig_id(nvmlDevice_t h, unsigned int *id, int compute)
{
    struct fake_config c;
    struct fake_mig *m;
    if (!is_mig(h))
        return NVML_ERROR_NOT_SUPPORTED;
    nvmlReturn_t rc = mig_device(&c, h, &m);
    if (rc || !id)
        return rc ? rc : NVML_ERROR_INVALID_ARGUMENT;
    *id = compute ? m->ci : m->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t h, unsigned int *id) { return mig_id(h, id, 0); }
nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t h, unsigned int *id) { return mig_id(h, id, 1); }
