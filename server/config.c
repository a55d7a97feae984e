/*
 * config.c: the daemon's configuration (see config.h): one table of options with
 * their types, bounds and defaults, and the three readers (file, environment,
 * flags) that all go through the same parser, so an option means the same thing
 * wherever it is written.
 */
#include "config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"

typedef enum {
    OPT_LISTEN,     /* HOST:PORT into listen_host and listen_port */
    OPT_PATH,       /* char[]; min 1: must not be empty */
    OPT_INT,        /* int in [min, max] */
    OPT_U64,        /* uint64_t in [min, max] */
    OPT_SIZE,       /* size_t in [min, max], with an optional K/M/G/T suffix */
    OPT_TOKEN,      /* char[] of visible ASCII characters */
    OPT_BOOL,       /* int 0 or 1 */
    OPT_CHOICE,     /* int, the index of one of choices[0..max] (any case) */
    OPT_URL,        /* char[]: "" or an http://, https:// or file:// URL without spaces */
} OptionType;

typedef struct {
    const char *key;    /* file spelling; env RESNETD_<KEY>, flag --<key with '-'> */
    OptionType type;
    size_t offset;      /* of the field in Config (unused for OPT_LISTEN) */
    size_t size;        /* of the field */
    uint64_t min, max;  /* numbers: bounds; OPT_PATH: min 1 = must not be empty */
    const char *def;    /* default, in the syntax of the file (parsed by config_defaults) */
    const char *const *choices; /* OPT_CHOICE: the max + 1 names of the values */
} ConfigOption;

#define FIELD(f) offsetof(Config, f), sizeof(((Config *)0)->f)
#define KIB ((uint64_t)1 << 10)
#define GIB ((uint64_t)1 << 30)
/* the max of an OPT_CHOICE row: the index of the last name */
#define LAST(names) (sizeof names / sizeof names[0] - 1)

/* indexed by LogLevel */
static const char *const log_level_names[] = {"error", "warn", "info", "debug"};
_Static_assert(LOG_LEVEL_ERROR == 0 && LOG_LEVEL_WARN == 1 && LOG_LEVEL_INFO == 2 &&
                   LOG_LEVEL_DEBUG == 3, "LogLevel indexes log_level_names[]");

/* indexed by BlasKernelPolicy */
static const char *const blas_kernel_names[] = {"env", "auto"};
_Static_assert(BLAS_KERNEL_ENV == 0 && BLAS_KERNEL_AUTO == 1,
               "BlasKernelPolicy indexes blas_kernel_names[]");

/* docs/configuration.md and config/resnetd.conf describe these rows; keep them in step. */
static const ConfigOption options[] = {
    {"listen", OPT_LISTEN, 0, 0, 0, 0, "127.0.0.1:8080", NULL},
    {"data_dir", OPT_PATH, FIELD(data_dir), 1, 0, "./var", NULL},
    {"data_root", OPT_PATH, FIELD(data_root), 0, 0, "./data", NULL},
    {"weights_dir", OPT_PATH, FIELD(weights_dir), 0, 0, "", NULL},
    {"threads", OPT_INT, FIELD(threads), 0, 1024, "0", NULL},
    {"blas_kernel", OPT_CHOICE, FIELD(blas_kernel), 0, LAST(blas_kernel_names), "env",
     blas_kernel_names},
    {"cache_bytes", OPT_SIZE, FIELD(cache_bytes), 0, SIZE_MAX, "2G", NULL},
    {"upload_limit", OPT_SIZE, FIELD(upload_limit), 1, SIZE_MAX, "1G", NULL},
    /* a JSON body is read into memory whole: a gigabyte is already a mistake */
    {"body_limit", OPT_SIZE, FIELD(body_limit), KIB, GIB, "1M", NULL},
    {"max_pixels", OPT_U64, FIELD(max_pixels), 1, UINT64_MAX, "100000000", NULL},
    {"token", OPT_TOKEN, FIELD(token), 0, 0, "", NULL},
    {"insecure", OPT_BOOL, FIELD(insecure), 0, 1, "false", NULL},
    {"log_level", OPT_CHOICE, FIELD(log_level), 0, LAST(log_level_names), "info",
     log_level_names},
    {"max_jobs_queued", OPT_INT, FIELD(max_jobs_queued), 1, 100000, "100", NULL},
    {"checkpoint_interval", OPT_INT, FIELD(checkpoint_interval), 0, 86400, "60", NULL},
    /* "": the shipped manifest, found by fetch_default_manifest (server/fetch.h) */
    {"weights_manifest", OPT_PATH, FIELD(weights_manifest), 0, 0, "", NULL},
    {"weights_mirror", OPT_URL, FIELD(weights_mirror), 0, 0, "", NULL},
};

_Static_assert(sizeof options / sizeof options[0] == CONFIG_OPTION_COUNT,
               "CONFIG_OPTION_COUNT is the number of rows of options[]");

/* Flags of `resnetd serve` that are not options: config_load and main read them. */
static const struct {
    const char *name;   /* without "--" */
    int takes_value;
} caller_flags[] = {
    {"config", 1},
    {"print-config", 0},
};

#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))
#define N_CALLER_FLAGS ((int)(sizeof caller_flags / sizeof caller_flags[0]))

/* ---- values ---------------------------------------------------------------- */

/* A whole number of decimal digits only (no sign, no spaces) at s; *end after it.
 * Returns 0, -1 when there is no digit, -2 on overflow. */
static int parse_digits(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            while (*p >= '0' && *p <= '9')
                p++;
            *end = p;
            return -2;
        }
        v = v * 10 + d;
    }
    *end = p;
    if (p == s)
        return -1;
    *out = v;
    return 0;
}

/* A size: digits and an optional suffix K, M, G, T or KiB, MiB, GiB, TiB (any
 * case; powers of 1024). Returns 0, -1 for bad syntax, -2 when it does not fit
 * in 64 bits. */
static int parse_size(const char *s, uint64_t *out)
{
    static const char *const suffixes[] = {"k", "m", "g", "t"};
    const char *end;
    uint64_t v;
    int rc = parse_digits(s, &end, &v);
    if (rc == -1)
        return -1;
    int shift = 0;
    if (*end) {
        int found = 0;
        for (int i = 0; i < 4 && !found; i++) {
            if (tolower((unsigned char)end[0]) != suffixes[i][0])
                continue;
            if (end[1] == '\0' || !strcasecmp(end + 1, "iB")) {
                shift = 10 * (i + 1);
                found = 1;
            }
        }
        if (!found)
            return -1;
    }
    if (rc == -2 || v > (UINT64_MAX >> shift))
        return -2;
    *out = v << shift;
    return 0;
}

/* The shortest exact spelling of a size: 2147483648 -> "2G", 1500 -> "1500". */
static void format_size(char *buf, size_t n, uint64_t v)
{
    static const char units[] = "KMGT";
    int u = -1;
    while (u < 3 && v != 0 && (v & 1023) == 0) {
        v >>= 10;
        u++;
    }
    if (u < 0)
        snprintf(buf, n, "%" PRIu64, v);
    else
        snprintf(buf, n, "%" PRIu64 "%c", v, units[u]);
}

/* Appends text to buf (size n) at *used, truncating. */
static void append(char *buf, size_t n, size_t *used, const char *text)
{
    int w = snprintf(buf + *used, n - *used, "%s", text);
    if (w > 0)
        *used += (size_t)w < n - *used ? (size_t)w : n - *used - 1;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) { *out = 1; return 0; }
        if (!strcasecmp(s, no[i])) { *out = 0; return 0; }
    }
    return -1;
}

static int host_is_ipv4(const char *h)
{
    struct in_addr a;
    return inet_pton(AF_INET, h, &a) == 1;
}

static int host_is_ipv6(const char *h)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, h, &a) == 1;
}

static int host_is_loopback(const char *h)
{
    if (!strcmp(h, "localhost"))
        return 1;
    struct in_addr a4;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

/* HOST:PORT or [IPV6]:PORT. */
static int parse_listen(const char *s, char *host, size_t host_size, int *port)
{
    char h[64];
    const char *hs, *he, *ps;
    if (s[0] == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (!he || he[1] != ':')
            return -1;
        ps = he + 2;
    } else {
        hs = s;
        he = strrchr(s, ':');
        if (!he)
            return -1;
        ps = he + 1;
    }
    size_t hl = (size_t)(he - hs);
    if (hl == 0 || hl >= sizeof h || hl >= host_size)
        return -1;
    memcpy(h, hs, hl);
    h[hl] = '\0';
    if (s[0] == '[' ? !host_is_ipv6(h) : strcmp(h, "localhost") && !host_is_ipv4(h))
        return -1;
    const char *end;
    uint64_t p;
    if (parse_digits(ps, &end, &p) || *end || p < 1 || p > 65535)
        return -1;
    memcpy(host, h, hl + 1);
    *port = (int)p;
    return 0;
}

/* 1 when every character of s is visible ASCII (no space, no control, no UTF-8). */
static int all_visible_ascii(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7e)
            return 0;
    return 1;
}

/* Parses s as option o and stores it in c; on failure leaves c alone and writes
 * what was expected into why. */
static int option_parse(const ConfigOption *o, const char *s, Config *c, char *why, size_t n)
{
    char *field = (char *)c + o->offset;
    uint64_t v;
    const char *end;
    int rc;
    char lo[32], hi[32];
    switch (o->type) {
    case OPT_LISTEN:
        if (parse_listen(s, c->listen_host, sizeof c->listen_host, &c->listen_port))
            goto bad_listen;
        return 0;
    case OPT_PATH:
        if (o->min && !*s) {
            snprintf(why, n, "expected a folder (it must not be empty)");
            return -1;
        }
        if (strlen(s) >= o->size) {
            snprintf(why, n, "expected a path of at most %zu bytes", o->size - 1);
            return -1;
        }
        memcpy(field, s, strlen(s) + 1);
        return 0;
    case OPT_URL:
        if (*s && strncmp(s, "http://", 7) && strncmp(s, "https://", 8) &&
            strncmp(s, "file://", 7)) {
            snprintf(why, n, "expected an http://, https:// or file:// URL, or \"\" for none");
            return -1;
        }
        if (!all_visible_ascii(s)) {
            snprintf(why, n, "expected a URL of visible ASCII characters, without spaces");
            return -1;
        }
        if (strlen(s) >= o->size) {
            snprintf(why, n, "expected a URL of at most %zu bytes", o->size - 1);
            return -1;
        }
        memcpy(field, s, strlen(s) + 1);
        return 0;
    case OPT_TOKEN:
        if (!all_visible_ascii(s)) {
            snprintf(why, n, "expected visible ASCII characters only, without spaces");
            return -1;
        }
        if (strlen(s) >= o->size) {
            snprintf(why, n, "expected at most %zu characters", o->size - 1);
            return -1;
        }
        memcpy(field, s, strlen(s) + 1);
        return 0;
    case OPT_INT:
    case OPT_U64:
        rc = parse_digits(s, &end, &v);
        if (rc || *end || v < o->min || v > o->max) {
            if (o->max == UINT64_MAX)
                snprintf(why, n, "expected a whole number of at least %" PRIu64, o->min);
            else
                snprintf(why, n, "expected a whole number from %" PRIu64 " to %" PRIu64,
                         o->min, o->max);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)field = (int)v;
        else
            *(uint64_t *)field = v;
        return 0;
    case OPT_SIZE:
        rc = parse_size(s, &v);
        format_size(lo, sizeof lo, o->min);
        format_size(hi, sizeof hi, o->max);
        if (rc == -1) {
            snprintf(why, n, "expected a size: a whole number of bytes with an optional "
                             "suffix K, M, G or T (or KiB, MiB, GiB, TiB; powers of 1024)");
            return -1;
        }
        if (rc == -2 || v < o->min || v > o->max) {
            if (o->max == SIZE_MAX && o->min == 0)
                snprintf(why, n, "expected a size below 16 EiB (2^64 bytes)");
            else if (o->max == SIZE_MAX)
                snprintf(why, n, "expected a size of at least %s and below 16 EiB (2^64 bytes)",
                         lo);
            else
                snprintf(why, n, "expected a size from %s to %s", lo, hi);
            return -1;
        }
        *(size_t *)field = (size_t)v;
        return 0;
    case OPT_BOOL:
        if (parse_bool(s, (int *)field)) {
            snprintf(why, n, "expected true or false (or yes/no, on/off, 1/0)");
            return -1;
        }
        return 0;
    case OPT_CHOICE: {
        for (uint64_t i = 0; i <= o->max; i++) {
            if (!strcasecmp(s, o->choices[i])) {
                *(int *)field = (int)i;
                return 0;
            }
        }
        /* "expected error, warn, info or debug" */
        size_t used = (size_t)snprintf(why, n, "expected");
        for (uint64_t i = 0; i <= o->max; i++) {
            append(why, n, &used, i == 0 ? " " : i == o->max ? " or " : ", ");
            append(why, n, &used, o->choices[i]);
        }
        return -1;
    }
    }
    snprintf(why, n, "unknown option type");
    return -1;
bad_listen:
    snprintf(why, n, "expected HOST:PORT with HOST an IPv4 address, localhost or [IPv6 "
                     "address] and PORT from 1 to 65535");
    return -1;
}

/* Parses and stores value for option i, recording its source; on failure an
 * error "WHERE: why (got 'VALUE')" (never showing a token). */
static int option_set(Config *c, int i, const char *value, ConfigSource src, int line,
                      const char *where, Error *err)
{
    char why[256];
    if (option_parse(&options[i], value, c, why, sizeof why)) {
        if (options[i].type == OPT_TOKEN)
            return error_set(err, "%s: %s", where, why);
        size_t len = strlen(value);
        return error_set(err, "%s: %s (got '%.*s%s')", where, why, len > 80 ? 77 : (int)len,
                         value, len > 80 ? "..." : "");
    }
    c->source[i] = (unsigned char)src;
    c->source_line[i] = line;
    return 0;
}

static int option_find(const char *key, size_t len)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].key) == len && !memcmp(options[i].key, key, len))
            return i;
    return -1;
}

/* ---- defaults and the file -------------------------------------------------- */

void config_defaults(Config *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_OPTIONS; i++) {
        char why[256];
        int rc = option_parse(&options[i], options[i].def, c, why, sizeof why);
        assert(rc == 0 && "every default in options[] parses");
        (void)rc;
        c->source[i] = CONFIG_FROM_DEFAULT;
    }
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* The value part of a line (after '=', trimmed) without its quotes or trailing
 * comment, in place; NULL and a reason in why when malformed. */
static char *file_value(char *v, char *why, size_t n)
{
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close) {
            snprintf(why, n, "missing closing '\"'");
            return NULL;
        }
        char *rest = close + 1;
        while (isspace((unsigned char)*rest))
            rest++;
        if (*rest && *rest != '#') {
            snprintf(why, n, "unexpected text after the closing '\"'");
            return NULL;
        }
        *close = '\0';
        return v + 1;
    }
    for (char *p = v; *p; p++) {
        if (*p == '#' && (p == v || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    }
    return trim(v);
}

/* The flag spelling of an option key: "data_dir" -> "--data-dir". */
static void flag_name(char *buf, size_t n, const char *key)
{
    size_t used = (size_t)snprintf(buf, n, "--");
    for (; *key && used + 1 < n; key++)
        buf[used++] = *key == '_' ? '-' : *key;
    buf[used] = '\0';
}

/* "listen, data_dir, ..." or, with flags, "--listen, --data-dir, ..., --config, ...". */
static void options_list(char *buf, size_t n, int flags)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_OPTIONS; i++) {
        char name[64];
        if (flags)
            flag_name(name, sizeof name, options[i].key);
        else
            snprintf(name, sizeof name, "%s", options[i].key);
        if (i)
            append(buf, n, &used, ", ");
        append(buf, n, &used, name);
    }
    for (int i = 0; flags && i < N_CALLER_FLAGS; i++) {
        append(buf, n, &used, ", --");
        append(buf, n, &used, caller_flags[i].name);
    }
}

int config_load_file(Config *c, const char *path, Error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return error_set(err, "%s: cannot open the config file: %s", path, strerror(errno));
    snprintf(c->config_file, sizeof c->config_file, "%s", path);
    int seen[CONFIG_OPTION_COUNT] = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;
    int rc = -1;
    while (errno = 0, (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)len != strlen(line)) {
            error_set(err, "%s:%d: contains a NUL byte (not a text file?)", path, lineno);
            goto fail;
        }
        char *s = line;
        if (lineno == 1 && !memcmp(s, "\xEF\xBB\xBF", 3))
            s += 3; /* a UTF-8 byte order mark, as some editors write */
        s = trim(s);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            error_set(err, "%s:%d: expected KEY = VALUE (got '%.80s')", path, lineno, s);
            goto fail;
        }
        *eq = '\0';
        char *key = trim(s);
        if (!*key) {
            error_set(err, "%s:%d: expected KEY = VALUE (the key is missing)", path, lineno);
            goto fail;
        }
        int i = option_find(key, strlen(key));
        if (i < 0) {
            char known[400];
            options_list(known, sizeof known, 0);
            error_set(err, "%s:%d: unknown option '%.64s' (options: %s)", path, lineno, key,
                      known);
            goto fail;
        }
        if (seen[i]) {
            error_set(err, "%s:%d: %s: already set on line %d", path, lineno, key, seen[i]);
            goto fail;
        }
        seen[i] = lineno;
        char why[128];
        char *value = file_value(trim(eq + 1), why, sizeof why);
        if (!value) {
            error_set(err, "%s:%d: %s: %s", path, lineno, key, why);
            goto fail;
        }
        char where[CONFIG_PATH_MAX + 96];
        snprintf(where, sizeof where, "%s:%d: %s", path, lineno, key);
        if (option_set(c, i, value, CONFIG_FROM_FILE, lineno, where, err))
            goto fail;
    }
    if (ferror(f)) {
        error_set(err, "%s: cannot read the config file: %s", path, strerror(errno));
        goto fail;
    }
    rc = 0;
fail:
    free(line);
    fclose(f);
    return rc;
}

/* ---- environment ----------------------------------------------------------- */

static const char *env_lookup(char *const *envp, const char *name)
{
    if (!envp)
        return getenv(name);
    size_t n = strlen(name);
    for (; *envp; envp++)
        if (!strncmp(*envp, name, n) && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

static void env_name(char *buf, size_t n, const char *key)
{
    size_t used = (size_t)snprintf(buf, n, "RESNETD_");
    for (; *key && used + 1 < n; key++)
        buf[used++] = (char)toupper((unsigned char)*key);
    buf[used] = '\0';
}

/* Applies RESNETD_<KEY> of option i when it is set. */
static int env_option(Config *c, int i, char *const *envp, Error *err)
{
    char name[64];
    env_name(name, sizeof name, options[i].key);
    const char *v = env_lookup(envp, name);
    return v ? option_set(c, i, v, CONFIG_FROM_ENV, 0, name, err) : 0;
}

int config_load_env(Config *c, char *const *envp, Error *err)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (env_option(c, i, envp, err))
            return -1;
    return 0;
}

int config_load_env_option(Config *c, const char *key, char *const *envp, Error *err)
{
    int i = option_find(key, strlen(key));
    if (i < 0)
        return error_set(err, "unknown option '%s'", key);
    return env_option(c, i, envp, err);
}

/* ---- flags ----------------------------------------------------------------- */

/* One flag of argv, read by flag_next. */
typedef struct {
    const char *name;   /* after "--", up to '=' or the end */
    size_t len;
    int option;         /* index in options[], or -1 */
    int caller;         /* index in caller_flags[], or -1 */
    const char *value;  /* NULL when none */
} Flag;

/* Does "--<name>" spell key (with '-' for '_')? */
static int flag_is(const char *key, const char *name, size_t len)
{
    size_t i = 0;
    for (; i < len && key[i]; i++)
        if (name[i] != (key[i] == '_' ? '-' : key[i]))
            return 0;
    return i == len && key[i] == '\0';
}

/* Reads the flag at argv[*i] and its value (the rest after '=' or, for a flag
 * that takes one, the next argument), advancing *i past what it used. On error
 * *i is past argv[*i] and f->name is set when the argument was a flag. */
static int flag_next(int argc, char **argv, int *i, Flag *f, Error *err)
{
    const char *arg = argv[(*i)++];
    memset(f, 0, sizeof *f);
    f->option = f->caller = -1;
    if (strncmp(arg, "--", 2) || !arg[2])
        return error_set(err, "unexpected argument '%s' (serve takes only --flags)", arg);
    f->name = arg + 2;
    const char *eq = strchr(f->name, '=');
    f->len = eq ? (size_t)(eq - f->name) : strlen(f->name);
    f->value = eq ? eq + 1 : NULL;
    int takes_value = 0;
    for (int k = 0; k < N_OPTIONS && f->option < 0; k++)
        if (flag_is(options[k].key, f->name, f->len))
            f->option = k;
    for (int k = 0; k < N_CALLER_FLAGS && f->option < 0 && f->caller < 0; k++)
        if (strlen(caller_flags[k].name) == f->len &&
            !memcmp(caller_flags[k].name, f->name, f->len))
            f->caller = k;
    if (f->option >= 0)
        takes_value = options[f->option].type != OPT_BOOL;
    else if (f->caller >= 0)
        takes_value = caller_flags[f->caller].takes_value;
    else {
        char known[400];
        options_list(known, sizeof known, 1);
        return error_set(err, "unknown flag '--%.*s' (flags: %s)",
                         (int)(f->len > 64 ? 64 : f->len), f->name, known);
    }
    if (f->caller >= 0 && !takes_value && f->value)
        return error_set(err, "--%s takes no value", caller_flags[f->caller].name);
    if (takes_value && !f->value) {
        if (*i >= argc || !strncmp(argv[*i], "--", 2))
            return error_set(err, "--%.*s: missing value (write --%.*s=VALUE for a value "
                                  "that starts with --)",
                             (int)f->len, f->name, (int)f->len, f->name);
        f->value = argv[(*i)++];
    }
    return 0;
}

int config_find_flag(int argc, char **argv, const char *flag, const char **value)
{
    if (!strncmp(flag, "--", 2))
        flag += 2;
    int found = 0;
    for (int i = 0; i < argc;) {
        Flag f;
        int rc = flag_next(argc, argv, &i, &f, NULL);
        if (!f.name || strlen(flag) != f.len || memcmp(f.name, flag, f.len))
            continue;
        if (rc || (!value && f.value))
            return -1;
        if (value)
            *value = f.value;
        found = 1;
    }
    return found;
}

int config_load_args(Config *c, int argc, char **argv, Error *err)
{
    for (int i = 0; i < argc;) {
        Flag f;
        if (flag_next(argc, argv, &i, &f, err))
            return -1;
        if (f.option < 0)
            continue; /* --config, --print-config: the caller's */
        char where[96];
        snprintf(where, sizeof where, "--%.*s", (int)f.len, f.name);
        if (option_set(c, f.option, f.value ? f.value : "true", CONFIG_FROM_FLAG, 0, where,
                       err))
            return -1;
    }
    return 0;
}

int config_load_flag_option(Config *c, const char *key, const char *value, Error *err)
{
    int i = option_find(key, strlen(key));
    if (i < 0)
        return error_set(err, "unknown option '%s'", key);
    char where[96];
    flag_name(where, sizeof where, key);
    return option_set(c, i, value, CONFIG_FROM_FLAG, 0, where, err);
}

/* ---- all together ---------------------------------------------------------- */

static void listen_format(char *buf, size_t n, const Config *c)
{
    int v6 = strchr(c->listen_host, ':') != NULL;
    snprintf(buf, n, "%s%s%s:%d", v6 ? "[" : "", c->listen_host, v6 ? "]" : "",
             c->listen_port);
}

int config_finish(Config *c, Error *err)
{
    if (!c->weights_dir[0]) {
        size_t n = strlen(c->data_dir);
        const char *sep = n && c->data_dir[n - 1] == '/' ? "" : "/";
        if (n + strlen(sep) + strlen("weights") >= sizeof c->weights_dir)
            return error_set(err, "weights_dir: the default <data_dir>/weights would be longer "
                                  "than %zu bytes (data_dir has %zu); set weights_dir",
                             sizeof c->weights_dir - 1, n);
        char *w = c->weights_dir;
        memcpy(w, c->data_dir, n);
        memcpy(w + n, sep, strlen(sep));
        memcpy(w + n + strlen(sep), "weights", sizeof "weights");
    }
    if (!host_is_loopback(c->listen_host) && !c->token[0] && !c->insecure) {
        char addr[300];
        listen_format(addr, sizeof addr, c);
        return error_set(err, "listening on %s requires a token (--token, RESNETD_TOKEN or "
                              "token in the config file) or --insecure (RESNETD_INSECURE=1, "
                              "insecure = true) to accept requests from anyone",
                         addr);
    }
    return 0;
}

int config_load(Config *c, int argc, char **argv, char *const *envp, Error *err)
{
    config_defaults(c);
    const char *file = NULL;
    int rc = config_find_flag(argc, argv, "--config", &file);
    if (rc < 0)
        return error_set(err, "--config: missing value (expected a file)");
    if (rc == 0) {
        file = env_lookup(envp, "RESNETD_CONFIG");
        if (file && !*file)
            file = NULL;
    }
    if (file && config_load_file(c, file, err))
        return -1;
    if (config_load_env(c, envp, err) || config_load_args(c, argc, argv, err))
        return -1;
    return config_finish(c, err);
}

/* ---- printing -------------------------------------------------------------- */

/* A string value the way the file reads it back: quoted when empty or when it
 * has a '#', surrounding spaces or a leading quote. */
static void string_format(char *buf, size_t n, const char *s)
{
    size_t len = strlen(s);
    int quote = !len || strchr(s, '#') || isspace((unsigned char)s[0]) ||
                isspace((unsigned char)s[len - 1]) || s[0] == '"';
    snprintf(buf, n, quote ? "\"%s\"" : "%s", s);
}

void config_print(const Config *c, FILE *out)
{
    fprintf(out, "# resnetd serve: effective configuration (config file: %s)\n",
            c->config_file[0] ? c->config_file : "none");
    for (int i = 0; i < N_OPTIONS; i++) {
        const ConfigOption *o = &options[i];
        const char *field = (const char *)c + o->offset;
        char value[CONFIG_PATH_MAX + 8];
        switch (o->type) {
        case OPT_LISTEN: listen_format(value, sizeof value, c); break;
        case OPT_PATH:
        case OPT_URL: string_format(value, sizeof value, field); break;
        case OPT_TOKEN: snprintf(value, sizeof value, "%s", *field ? "(set)" : "(none)"); break;
        case OPT_INT: snprintf(value, sizeof value, "%d", *(const int *)field); break;
        case OPT_U64:
            snprintf(value, sizeof value, "%" PRIu64, *(const uint64_t *)field);
            break;
        case OPT_SIZE: format_size(value, sizeof value, *(const size_t *)field); break;
        case OPT_BOOL:
            snprintf(value, sizeof value, "%s", *(const int *)field ? "true" : "false");
            break;
        case OPT_CHOICE:
            snprintf(value, sizeof value, "%s", o->choices[*(const int *)field]);
            break;
        }
        char from[CONFIG_PATH_MAX + 32];
        switch (c->source[i]) {
        case CONFIG_FROM_FILE:
            snprintf(from, sizeof from, "%s:%d", c->config_file, c->source_line[i]);
            break;
        case CONFIG_FROM_ENV: env_name(from, sizeof from, o->key); break;
        case CONFIG_FROM_FLAG: flag_name(from, sizeof from, o->key); break;
        default:
            snprintf(from, sizeof from, "default");
            break;
        }
        int w = fprintf(out, "%s = %s", o->key, value);
        fprintf(out, "%*s# %s\n", w < 40 ? 40 - w : 1, "", from);
    }
}

int config_source(const Config *c, const char *key, int *line)
{
    int i = option_find(key, strlen(key));
    if (i < 0)
        return -1;
    if (line)
        *line = c->source[i] == CONFIG_FROM_FILE ? c->source_line[i] : 0;
    return c->source[i];
}

const char *config_log_level_name(int level)
{
    return level >= 0 && level < 4 ? log_level_names[level] : "?";
}
