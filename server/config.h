/*
 * config.h: the daemon's configuration (`resnetd serve`), read from a file, the
 * environment and command-line flags.
 *
 * Every option is a row of one table in config.c with its type and bounds; the
 * same option is spelled three ways:
 *   file         threads = 4          (lower-case key)
 *   environment  RESNETD_THREADS=4    (RESNETD_ + upper-case key)
 *   flag         --threads 4          (key with '_' replaced by '-')
 * Precedence, lowest first: defaults < file < environment < flags. Unknown keys
 * and flags and out-of-range values are errors that name where the value came
 * from ("FILE:LINE: threads: ...", "RESNETD_THREADS: ...", "--threads: ..."),
 * never warnings. docs/configuration.md lists the options; config/resnetd.conf
 * is a commented file with every default.
 *
 * Nothing here is meant to be called from more than one thread: the daemon loads
 * its configuration once at start-up and then only reads the Config.
 */
#ifndef RESNETD_CONFIG_H
#define RESNETD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"

/* Log levels, least verbose first (a level shows itself and every level before
 * it); log.h uses them. Not LOG_INFO/LOG_DEBUG: <syslog.h> defines those names
 * as macros. */
typedef enum { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG } LogLevel;

/* Where an option's value came from (for `resnetd serve --print-config`). */
typedef enum {
    CONFIG_FROM_DEFAULT,
    CONFIG_FROM_FILE,
    CONFIG_FROM_ENV,
    CONFIG_FROM_FLAG,
} ConfigSource;

/* The number of options (rows of the table in config.c). */
#define CONFIG_OPTION_COUNT 17

#define CONFIG_PATH_MAX 4096

typedef struct {
    char listen_host[256];      /* "127.0.0.1", "localhost", "0.0.0.0", "::1" (no brackets) */
    int listen_port;            /* 1..65535 */
    char data_dir[CONFIG_PATH_MAX];    /* resnetd.db, datasets/ (uploads), jobs/ID/ */
    char data_root[CONFIG_PATH_MAX];   /* server-side dataset folders must be under it;
                                          "" disables registering server-side folders */
    char weights_dir[CONFIG_PATH_MAX]; /* "" until config_finish makes it <data_dir>/weights */
    int threads;                /* 0..1024, 0 = one per core */
    int blas_kernel;            /* a BlasKernelPolicy (blas.h): "env" or "auto" */
    size_t cache_bytes;         /* activation cache budget, 0 = no cache */
    size_t upload_limit;        /* largest dataset archive upload, bytes */
    size_t body_limit;          /* largest JSON request body, bytes */
    uint64_t max_pixels;        /* largest image (width * height) a loader decodes */
    char token[256];            /* bearer token required by the API, "" = none */
    int insecure;               /* 1: allow a non-loopback address without a token */
    int log_level;              /* a LogLevel */
    int max_jobs_queued;        /* 1..100000 */
    int checkpoint_interval;    /* seconds between a job's checkpoints, 0 = every epoch */
    char weights_manifest[CONFIG_PATH_MAX]; /* named weights (server/fetch.h); "" = the
                                               shipped config/weights.json */
    char weights_mirror[CONFIG_PATH_MAX];   /* "" or a URL base that replaces every manifest
                                               URL's folder (file name: the entry's file) */

    /* Where each value came from, by option (table order), and for values from
     * the file, its line; config_file is the file that was read ("" = none). */
    unsigned char source[CONFIG_OPTION_COUNT];
    int source_line[CONFIG_OPTION_COUNT];
    char config_file[CONFIG_PATH_MAX];
} Config;

/* Sets every option to its default and every source to CONFIG_FROM_DEFAULT. */
void config_defaults(Config *c);

/* Reads KEY = VALUE lines from path over c. A line is blank, a comment (first
 * non-blank character '#'), or KEY = VALUE with whitespace around either trimmed.
 * A value may be written in double quotes (no escapes; the quotes are removed),
 * which is the way to give an empty value or one with " #" in it; after an
 * unquoted value, whitespace followed by '#' starts a comment. Errors: a file
 * that cannot be read ("PATH: ..."), and "PATH:LINE: ..." for a line that is not
 * KEY = VALUE, an unknown key, a key set twice, or a bad value (naming the key
 * and what was expected). On error c may hold some of the file's values: discard
 * it. */
int config_load_file(Config *c, const char *path, Error *err);

/* Applies the RESNETD_<KEY> variables of envp (a NULL-terminated array of
 * "NAME=VALUE" strings, like main's third argument), or of the process
 * environment (getenv) when envp is NULL. Variables that are not options
 * (RESNETD_CONFIG, RESNETD_BUILD_DIR, ...) are ignored. A set variable is applied
 * even when empty. A bad value is an error naming the variable. */
int config_load_env(Config *c, char *const *envp, Error *err);

/* Looks for a flag of `resnetd serve` in argv[0..argc) (the arguments after
 * "serve"), reading the arguments the way config_load_args does so that a
 * flag's value is never mistaken for a flag. With value NULL the flag takes no
 * value (--print-config); otherwise *value is set to its value ("--config FILE"
 * or "--config=FILE"; the last one wins). Returns 1 when found, 0 when not, -1
 * when the flag is given without a value or with a value it does not take.
 * Borrowed: *value points into argv. */
int config_find_flag(int argc, char **argv, const char *flag, const char **value);

/* Applies `resnetd serve` flags argv[0..argc) (the arguments after "serve"):
 * --KEY VALUE or --KEY=VALUE for every option; --insecure alone means true (a
 * value needs --insecure=VALUE). --config FILE and --print-config are the
 * caller's (config_load, main) and are skipped here. Errors: an unknown flag, an
 * argument that is not a flag, a missing value, a bad value (naming the flag). */
int config_load_args(Config *c, int argc, char **argv, Error *err);

/* Checks that need every source: makes an empty weights_dir <data_dir>/weights,
 * and refuses a listen address that is not loopback (127.x.x.x, localhost, ::1)
 * when there is no token unless insecure is set. */
int config_finish(Config *c, Error *err);

/* Applies one option the way config_load_env does, for commands other than serve
 * that read a few options themselves (`resnetd train`, `version`): RESNETD_<KEY>
 * of envp (or of the process environment when envp is NULL), nothing when it is
 * unset. key is the file spelling of an option. Errors: an unknown key, and a bad
 * value, naming the variable as config_load_env does. */
int config_load_env_option(Config *c, const char *key, char *const *envp, Error *err);

/* Applies one option as the flag --<key> with value would (see
 * config_load_env_option); errors name the flag. */
int config_load_flag_option(Config *c, const char *key, const char *value, Error *err);

/* config_defaults, then the file (--config FILE in argv, else RESNETD_CONFIG when
 * set and not empty, else none), the environment (envp as in config_load_env),
 * the flags, and config_finish. */
int config_load(Config *c, int argc, char **argv, char *const *envp, Error *err);

/* Writes the effective configuration as "key = value" lines, each followed by a
 * comment saying where the value came from. The token is written as "(set)" or
 * "(none)", never itself. */
void config_print(const Config *c, FILE *out);

/* Where option `key` (file spelling) came from, and for CONFIG_FROM_FILE its line
 * in *line (when line is not NULL). -1 for an unknown key. */
int config_source(const Config *c, const char *key, int *line);

/* "error", "warn", "info" or "debug" ("?" for anything else). */
const char *config_log_level_name(int level);

#endif
