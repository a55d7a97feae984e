/*
 * test_config.c: server/config.c: defaults, the file syntax (comments, quotes,
 * whitespace), every option with a good and a bad value and the exact message
 * ("FILE:LINE: key: ..."), sizes, the environment and flags, precedence of the
 * three sources, the loopback/token rule, --print-config output, and the shipped
 * config/resnetd.conf (which must change nothing and document every option, as
 * docs/configuration.md must). The tests run from the repository root.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "config.h"

/* Every option: file key, environment variable, flag. */
static const char *const option_names[CONFIG_OPTION_COUNT][3] = {
    {"listen", "RESNETD_LISTEN", "--listen"},
    {"data_dir", "RESNETD_DATA_DIR", "--data-dir"},
    {"data_root", "RESNETD_DATA_ROOT", "--data-root"},
    {"weights_dir", "RESNETD_WEIGHTS_DIR", "--weights-dir"},
    {"threads", "RESNETD_THREADS", "--threads"},
    {"blas_kernel", "RESNETD_BLAS_KERNEL", "--blas-kernel"},
    {"cache_bytes", "RESNETD_CACHE_BYTES", "--cache-bytes"},
    {"upload_limit", "RESNETD_UPLOAD_LIMIT", "--upload-limit"},
    {"body_limit", "RESNETD_BODY_LIMIT", "--body-limit"},
    {"max_pixels", "RESNETD_MAX_PIXELS", "--max-pixels"},
    {"token", "RESNETD_TOKEN", "--token"},
    {"insecure", "RESNETD_INSECURE", "--insecure"},
    {"log_level", "RESNETD_LOG_LEVEL", "--log-level"},
    {"max_jobs_queued", "RESNETD_MAX_JOBS_QUEUED", "--max-jobs-queued"},
    {"checkpoint_interval", "RESNETD_CHECKPOINT_INTERVAL", "--checkpoint-interval"},
    {"weights_manifest", "RESNETD_WEIGHTS_MANIFEST", "--weights-manifest"},
    {"weights_mirror", "RESNETD_WEIGHTS_MIRROR", "--weights-mirror"},
};

/* Writes text to a fresh scratch file; returns its path (static buffer). */
static const char *write_conf(const char *text)
{
    static char path[8192];
    static int n;
    char name[64];
    snprintf(name, sizeof name, "conf-%d.conf", n++);
    snprintf(path, sizeof path, "%s", testutil_tmp_path(name));
    testutil_write_file(path, text, strlen(text));
    return path;
}

/* Defaults, then text as a file: the return code of config_load_file. */
static int load_text(Config *c, const char *text, Error *err)
{
    config_defaults(c);
    return config_load_file(c, write_conf(text), err);
}

/* Loads text that must fail and checks the whole message against
 * "<path>:<want>" (the path is the scratch file's). */
static void assert_file_error(const char *text, const char *want)
{
    Config c;
    Error err = {{0}};
    config_defaults(&c);
    const char *path = write_conf(text);
    char full[9000];
    snprintf(full, sizeof full, "%s:%s", path, want);
    assert_int_equal(config_load_file(&c, path, &err), -1);
    assert_string_equal(err.msg, full);
}

static void assert_config_equal(const Config *a, const Config *b)
{
    assert_string_equal(a->listen_host, b->listen_host);
    assert_int_equal(a->listen_port, b->listen_port);
    assert_string_equal(a->data_dir, b->data_dir);
    assert_string_equal(a->data_root, b->data_root);
    assert_string_equal(a->weights_dir, b->weights_dir);
    assert_int_equal(a->threads, b->threads);
    assert_int_equal(a->blas_kernel, b->blas_kernel);
    assert_int_equal(a->cache_bytes, b->cache_bytes);
    assert_int_equal(a->upload_limit, b->upload_limit);
    assert_int_equal(a->body_limit, b->body_limit);
    assert_int_equal(a->max_pixels, b->max_pixels);
    assert_string_equal(a->token, b->token);
    assert_int_equal(a->insecure, b->insecure);
    assert_int_equal(a->log_level, b->log_level);
    assert_int_equal(a->max_jobs_queued, b->max_jobs_queued);
    assert_int_equal(a->checkpoint_interval, b->checkpoint_interval);
    assert_string_equal(a->weights_manifest, b->weights_manifest);
    assert_string_equal(a->weights_mirror, b->weights_mirror);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (the tests run from the repository root)", path);
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    assert_non_null(mem);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(fwrite(chunk, 1, n, mem), n);
    fclose(f);
    assert_int_equal(fclose(mem), 0);
    return buf;
}

static void test_defaults(void **state)
{
    (void)state;
    Config c;
    memset(&c, 0x5a, sizeof c);
    config_defaults(&c);
    assert_string_equal(c.listen_host, "127.0.0.1");
    assert_int_equal(c.listen_port, 8080);
    assert_string_equal(c.data_dir, "./var");
    assert_string_equal(c.data_root, "./data");
    assert_string_equal(c.weights_dir, "");
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_ENV);
    assert_int_equal(c.cache_bytes, (size_t)2 << 30);
    assert_int_equal(c.upload_limit, (size_t)1 << 30);
    assert_int_equal(c.body_limit, (size_t)1 << 20);
    assert_int_equal(c.max_pixels, 100000000);
    assert_string_equal(c.token, "");
    assert_int_equal(c.insecure, 0);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    assert_int_equal(c.max_jobs_queued, 100);
    assert_int_equal(c.checkpoint_interval, 60);
    assert_string_equal(c.weights_manifest, "");
    assert_string_equal(c.weights_mirror, "");
    assert_string_equal(c.config_file, "");
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++)
        assert_int_equal(config_source(&c, option_names[i][0], NULL), CONFIG_FROM_DEFAULT);
    assert_int_equal(config_source(&c, "nope", NULL), -1);

    /* the defaults pass the final checks; weights_dir becomes <data_dir>/weights */
    Error err;
    assert_int_equal(config_finish(&c, &err), 0);
    assert_string_equal(c.weights_dir, "./var/weights");

    assert_string_equal(config_log_level_name(LOG_LEVEL_ERROR), "error");
    assert_string_equal(config_log_level_name(LOG_LEVEL_WARN), "warn");
    assert_string_equal(config_log_level_name(LOG_LEVEL_INFO), "info");
    assert_string_equal(config_log_level_name(LOG_LEVEL_DEBUG), "debug");
    assert_string_equal(config_log_level_name(4), "?");
}

static void test_file_syntax(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    const char *text =
        "\xEF\xBB\xBF# a comment on line 1 (after a byte order mark)\n"
        "\n"
        "   # an indented comment\n"
        "threads=3\n"                                   /* 4: no spaces */
        "   log_level   =   debug   \n"                  /* 5: spaces everywhere */
        "\tdata_dir\t=\t\"/srv/my dir\"\t\r\n"           /* 6: tabs, quotes, CRLF */
        "data_root =\n"                                  /* 7: empty value */
        "token = \"a#b\"   # quoted '#' is kept\n"       /* 8 */
        "weights_dir = /w/x#1   # comment after a value\n" /* 9: '#' inside a word */
        "cache_bytes = 512M# not a comment: no space before it\n";
    assert_int_equal(load_text(&c, text, &err), -1);
    assert_non_null(strstr(err.msg, ":10: cache_bytes: expected a size"));
    /* without the last line everything loads */
    const char *good =
        "\xEF\xBB\xBF# a comment on line 1 (after a byte order mark)\n"
        "\n"
        "   # an indented comment\n"
        "threads=3\n"
        "   log_level   =   debug   \n"
        "\tdata_dir\t=\t\"/srv/my dir\"\t\r\n"
        "data_root =\n"
        "token = \"a#b\"   # quoted '#' is kept\n"
        "weights_dir = /w/x#1   # comment after a value\n"
        "max_jobs_queued = \"7\"\n"
        "listen = \"\" # quoted empty\n";
    assert_int_equal(load_text(&c, good, &err), -1);
    assert_non_null(strstr(err.msg, ":11: listen: expected HOST:PORT"));
    char *fixed = strdup(good);
    *strstr(fixed, "listen") = '\0';
    const char *path = write_conf(fixed);
    free(fixed);
    config_defaults(&c);
    assert_int_equal(config_load_file(&c, path, &err), 0);
    assert_int_equal(c.threads, 3);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(c.data_dir, "/srv/my dir");
    assert_string_equal(c.data_root, "");
    assert_string_equal(c.token, "a#b");
    assert_string_equal(c.weights_dir, "/w/x#1");
    assert_int_equal(c.max_jobs_queued, 7);
    assert_string_equal(c.config_file, path);
    int line = -1;
    assert_int_equal(config_source(&c, "threads", &line), CONFIG_FROM_FILE);
    assert_int_equal(line, 4);
    assert_int_equal(config_source(&c, "data_dir", &line), CONFIG_FROM_FILE);
    assert_int_equal(line, 6);
    assert_int_equal(config_source(&c, "listen", &line), CONFIG_FROM_DEFAULT);
    assert_int_equal(line, 0);

    /* an empty file and a file of comments change nothing */
    Config d;
    config_defaults(&d);
    assert_int_equal(load_text(&c, "", &err), 0);
    assert_config_equal(&c, &d);
    assert_int_equal(load_text(&c, "# only\n\n  # comments\n", &err), 0);
    assert_config_equal(&c, &d);
}

static void test_file_errors(void **state)
{
    (void)state;
    assert_file_error("# one\n\nthreads = 2\nthread = 4\n",
                      "4: unknown option 'thread' (options: listen, data_dir, data_root, "
                      "weights_dir, threads, blas_kernel, cache_bytes, upload_limit, body_limit, "
                      "max_pixels, token, insecure, log_level, max_jobs_queued, "
                      "checkpoint_interval, weights_manifest, weights_mirror)");
    /* keys are lower-case, as written */
    assert_file_error("THREADS = 2\n", "1: unknown option 'THREADS' (options: listen, data_dir, "
                      "data_root, weights_dir, threads, blas_kernel, cache_bytes, upload_limit, "
                      "body_limit, max_pixels, token, insecure, log_level, max_jobs_queued, "
                      "checkpoint_interval, weights_manifest, weights_mirror)");
    assert_file_error("\nthreads 4\n", "2: expected KEY = VALUE (got 'threads 4')");
    assert_file_error("= 4\n", "1: expected KEY = VALUE (the key is missing)");
    assert_file_error("threads = 1\n\nthreads = 2\n", "3: threads: already set on line 1");
    assert_file_error("data_dir = \"/srv\n", "1: data_dir: missing closing '\"'");
    assert_file_error("data_dir = \"/srv\" x\n",
                      "1: data_dir: unexpected text after the closing '\"'");
    {
        const char text[] = "threads = 1\nthreads\0 = 2\n";
        Config c;
        Error err;
        config_defaults(&c);
        const char *path = testutil_tmp_path("nul.conf");
        testutil_write_file(path, text, sizeof text - 1);
        assert_int_equal(config_load_file(&c, path, &err), -1);
        assert_non_null(strstr(err.msg, ":2: contains a NUL byte"));
    }

    /* a missing file, and a folder */
    Config c;
    Error err;
    config_defaults(&c);
    const char *missing = testutil_tmp_path("no-such.conf");
    char want[9000];
    snprintf(want, sizeof want, "%s: cannot open the config file: No such file or directory",
             missing);
    assert_int_equal(config_load_file(&c, missing, &err), -1);
    assert_string_equal(err.msg, want);
    assert_int_equal(config_load_file(&c, testutil_tmpdir(), &err), -1);
    assert_non_null(strstr(err.msg, "Is a directory"));
}

/* One option set from the file on line 3 to a good value, checked by the caller,
 * or to a bad one, whose message must be "PATH:3: KEY: WHY (got 'VALUE')". */
static int set_line3(Config *c, const char *key, const char *value, Error *err)
{
    char text[512];
    snprintf(text, sizeof text, "# first\n\n%s = %s\n", key, value);
    return load_text(c, text, err);
}

static void assert_bad(const char *key, const char *value, const char *why)
{
    char text[512];
    snprintf(text, sizeof text, "# first\n\n%s = %s\n", key, value);
    /* the message shows the value without the file's quotes */
    char shown[512];
    size_t n = strlen(value);
    if (n >= 2 && value[0] == '"' && value[n - 1] == '"')
        snprintf(shown, sizeof shown, "%.*s", (int)n - 2, value + 1);
    else
        snprintf(shown, sizeof shown, "%s", value);
    char want[1024];
    if (!strcmp(key, "token"))
        snprintf(want, sizeof want, "3: %s: %s", key, why);
    else
        snprintf(want, sizeof want, "3: %s: %s (got '%s')", key, why, shown);
    assert_file_error(text, want);
}

static void test_every_option(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};

    assert_int_equal(set_line3(&c, "listen", "0.0.0.0:9000", &err), 0);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 9000);
    assert_int_equal(set_line3(&c, "listen", "localhost:1", &err), 0);
    assert_string_equal(c.listen_host, "localhost");
    assert_int_equal(c.listen_port, 1);
    assert_int_equal(set_line3(&c, "listen", "192.168.10.20:65535", &err), 0);
    assert_string_equal(c.listen_host, "192.168.10.20");
    assert_int_equal(c.listen_port, 65535);
    assert_int_equal(set_line3(&c, "listen", "[::1]:8081", &err), 0);
    assert_string_equal(c.listen_host, "::1");
    assert_int_equal(c.listen_port, 8081);
    assert_int_equal(set_line3(&c, "listen", "[fe80::1:2]:80", &err), 0);
    assert_string_equal(c.listen_host, "fe80::1:2");
    const char *listen_why = "expected HOST:PORT with HOST an IPv4 address, localhost or [IPv6 "
                             "address] and PORT from 1 to 65535";
    const char *bad_listens[] = {"8080", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536",
                                 "127.0.0.1:80x", "127.0.0.1:-1", ":8080", "example.com:80",
                                 "1.2.3:80", "256.1.1.1:80", "::1:8080", "[::1]8080",
                                 "[127.0.0.1]:80", "[::1:80", "localhost:", "127.0.0.1:+80"};
    for (size_t i = 0; i < sizeof bad_listens / sizeof bad_listens[0]; i++)
        assert_bad("listen", bad_listens[i], listen_why);

    assert_int_equal(set_line3(&c, "data_dir", "/var/lib/resnetd", &err), 0);
    assert_string_equal(c.data_dir, "/var/lib/resnetd");
    assert_bad("data_dir", "\"\"", "expected a folder (it must not be empty)");
    {
        /* one byte too long for the field */
        char text[CONFIG_PATH_MAX + 64];
        int n = snprintf(text, sizeof text, "data_root = ");
        memset(text + n, 'a', CONFIG_PATH_MAX);
        strcpy(text + n + CONFIG_PATH_MAX, "\n");
        assert_int_equal(load_text(&c, text, &err), -1);
        assert_non_null(strstr(err.msg, ":1: data_root: expected a path of at most 4095 bytes "
                                        "(got 'aaaa"));
        assert_non_null(strstr(err.msg, "aaa...')"));
        text[n + CONFIG_PATH_MAX - 1] = '\n';
        text[n + CONFIG_PATH_MAX] = '\0';
        assert_int_equal(load_text(&c, text, &err), 0);
        assert_int_equal(strlen(c.data_root), CONFIG_PATH_MAX - 1);
    }

    assert_int_equal(set_line3(&c, "data_root", "/datasets", &err), 0);
    assert_string_equal(c.data_root, "/datasets");
    assert_int_equal(set_line3(&c, "weights_dir", "/models", &err), 0);
    assert_string_equal(c.weights_dir, "/models");

    assert_int_equal(set_line3(&c, "threads", "1024", &err), 0);
    assert_int_equal(c.threads, 1024);
    assert_int_equal(set_line3(&c, "threads", "0", &err), 0);
    assert_int_equal(c.threads, 0);
    const char *threads_why = "expected a whole number from 0 to 1024";
    assert_bad("threads", "1025", threads_why);
    assert_bad("threads", "-1", threads_why);
    assert_bad("threads", "four", threads_why);
    assert_bad("threads", "4.0", threads_why);
    assert_bad("threads", "99999999999999999999999", threads_why);

    assert_int_equal(set_line3(&c, "blas_kernel", "auto", &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);
    assert_int_equal(set_line3(&c, "blas_kernel", "env", &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_ENV);
    assert_int_equal(set_line3(&c, "blas_kernel", "Auto", &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);
    assert_int_equal(set_line3(&c, "blas_kernel", "\"env\"", &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_ENV);
    /* a kernel name is not a policy: OPENBLAS_CORETYPE names kernels */
    assert_bad("blas_kernel", "SkylakeX", "expected env or auto");
    assert_bad("blas_kernel", "automatic", "expected env or auto");
    assert_bad("blas_kernel", "1", "expected env or auto");
    assert_bad("blas_kernel", "\"\"", "expected env or auto");
    assert_file_error("threads = 1\nblas_kernel = fastest\n",
                      "2: blas_kernel: expected env or auto (got 'fastest')");

    assert_int_equal(set_line3(&c, "cache_bytes", "0", &err), 0);
    assert_int_equal(c.cache_bytes, 0);
    assert_int_equal(set_line3(&c, "cache_bytes", "3GiB", &err), 0);
    assert_int_equal(c.cache_bytes, (size_t)3 << 30);
    assert_bad("cache_bytes", "2X", "expected a size: a whole number of bytes with an optional "
               "suffix K, M, G or T (or KiB, MiB, GiB, TiB; powers of 1024)");
    assert_int_equal(set_line3(&c, "upload_limit", "10G", &err), 0);
    assert_int_equal(c.upload_limit, (size_t)10 << 30);
    assert_bad("upload_limit", "0", "expected a size of at least 1 and below 16 EiB (2^64 bytes)");
    assert_int_equal(set_line3(&c, "body_limit", "1K", &err), 0);
    assert_int_equal(c.body_limit, 1024);
    assert_int_equal(set_line3(&c, "body_limit", "1G", &err), 0);
    assert_int_equal(c.body_limit, (size_t)1 << 30);
    assert_bad("body_limit", "1023", "expected a size from 1K to 1G");
    assert_bad("body_limit", "1073741825", "expected a size from 1K to 1G");

    assert_int_equal(set_line3(&c, "max_pixels", "1", &err), 0);
    assert_int_equal(c.max_pixels, 1);
    assert_int_equal(set_line3(&c, "max_pixels", "18446744073709551615", &err), 0);
    assert_int_equal(c.max_pixels, UINT64_MAX);
    assert_bad("max_pixels", "0", "expected a whole number of at least 1");
    assert_bad("max_pixels", "100M", "expected a whole number of at least 1");
    assert_bad("max_pixels", "18446744073709551616", "expected a whole number of at least 1");

    assert_int_equal(set_line3(&c, "token", "s3cr3t-T0ken_~!", &err), 0);
    assert_string_equal(c.token, "s3cr3t-T0ken_~!");
    /* a bad token is never echoed in the message */
    assert_bad("token", "\"two words\"", "expected visible ASCII characters only, without spaces");
    assert_bad("token", "\"caf\xC3\xA9\"", "expected visible ASCII characters only, without spaces");
    {
        char value[300];
        memset(value, 'x', 256);
        value[256] = '\0';
        assert_bad("token", value, "expected at most 255 characters");
        value[255] = '\0';
        assert_int_equal(set_line3(&c, "token", value, &err), 0);
        assert_int_equal(strlen(c.token), 255);
    }

    const char *trues[] = {"true", "yes", "on", "1", "TRUE", "Yes"};
    const char *falses[] = {"false", "no", "off", "0", "False", "OFF"};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(set_line3(&c, "insecure", trues[i], &err), 0);
        assert_int_equal(c.insecure, 1);
        assert_int_equal(set_line3(&c, "insecure", falses[i], &err), 0);
        assert_int_equal(c.insecure, 0);
    }
    assert_bad("insecure", "2", "expected true or false (or yes/no, on/off, 1/0)");
    assert_bad("insecure", "\"\"", "expected true or false (or yes/no, on/off, 1/0)");

    const char *levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(set_line3(&c, "log_level", levels[i], &err), 0);
        assert_int_equal(c.log_level, i);
    }
    assert_int_equal(set_line3(&c, "log_level", "WARN", &err), 0);
    assert_int_equal(c.log_level, LOG_LEVEL_WARN);
    assert_bad("log_level", "warning", "expected error, warn, info or debug");
    assert_bad("log_level", "3", "expected error, warn, info or debug");

    assert_int_equal(set_line3(&c, "max_jobs_queued", "1", &err), 0);
    assert_int_equal(c.max_jobs_queued, 1);
    assert_int_equal(set_line3(&c, "max_jobs_queued", "100000", &err), 0);
    assert_int_equal(c.max_jobs_queued, 100000);
    assert_bad("max_jobs_queued", "0", "expected a whole number from 1 to 100000");
    assert_bad("max_jobs_queued", "100001", "expected a whole number from 1 to 100000");

    assert_int_equal(set_line3(&c, "weights_manifest", "/etc/resnetd/weights.json", &err), 0);
    assert_string_equal(c.weights_manifest, "/etc/resnetd/weights.json");
    assert_int_equal(set_line3(&c, "weights_manifest", "\"\"", &err), 0);
    assert_string_equal(c.weights_manifest, "");
    const char *mirrors[] = {"http://127.0.0.1:8000/weights", "https://mirror.example/w/",
                             "file:///srv/weights", "\"\""};
    const char *mirrored[] = {"http://127.0.0.1:8000/weights", "https://mirror.example/w/",
                              "file:///srv/weights", ""};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(set_line3(&c, "weights_mirror", mirrors[i], &err), 0);
        assert_string_equal(c.weights_mirror, mirrored[i]);
    }
    const char *url_why = "expected an http://, https:// or file:// URL, or \"\" for none";
    assert_bad("weights_mirror", "ftp://mirror/w", url_why);
    assert_bad("weights_mirror", "/srv/weights", url_why);
    assert_bad("weights_mirror", "mirror.example", url_why);
    assert_bad("weights_mirror", "HTTP://MIRROR", url_why);
    assert_bad("weights_mirror", "\"http://a b/\"",
               "expected a URL of visible ASCII characters, without spaces");

    /* a bad value leaves the option as it was */
    config_defaults(&c);
    assert_int_equal(set_line3(&c, "listen", "0.0.0.0:1", &err), 0);
    assert_int_equal(config_load_file(&c, write_conf("listen = 10.0.0.1:0\n"), &err), -1);
    assert_string_equal(c.listen_host, "0.0.0.0");
    assert_int_equal(c.listen_port, 1);
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t want;
    } good[] = {
        {"0", 0},
        {"1", 1},
        {"1536", 1536},
        {"1K", 1024},
        {"1k", 1024},
        {"1KiB", 1024},
        {"1kib", 1024},
        {"3M", 3 << 20},
        {"3MiB", 3 << 20},
        {"2G", (uint64_t)2 << 30},
        {"2GiB", (uint64_t)2 << 30},
        {"5T", (uint64_t)5 << 40},
        {"5TiB", (uint64_t)5 << 40},
        {"007", 7},
        {"16777215T", ((uint64_t)1 << 24) * ((uint64_t)1 << 40) - ((uint64_t)1 << 40)},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183G", ((uint64_t)1 << 34) * ((uint64_t)1 << 30) - ((uint64_t)1 << 30)},
    };
    Config c;
    Error err = {{0}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (set_line3(&c, "cache_bytes", good[i].text, &err))
            fail_msg("cache_bytes = %s: %s", good[i].text, err.msg);
        assert_int_equal(c.cache_bytes, good[i].want);
    }
    const char *syntax = "expected a size: a whole number of bytes with an optional suffix K, "
                         "M, G or T (or KiB, MiB, GiB, TiB; powers of 1024)";
    const char *range = "expected a size below 16 EiB (2^64 bytes)";
    static const char *const junk[] = {"12X", "12KB", "12 K", "1.5G", "-1", "+5", "K",
                                       "\"\"", "0x10", "1Ki", "1GiBs", "1e9"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_bad("cache_bytes", junk[i], syntax);
    /* overflow: past 2^64 - 1 bytes, with or without a suffix */
    static const char *const big[] = {"18446744073709551616", "16777216T", "17179869184G",
                                      "99999999999999999999999K"};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        assert_bad("cache_bytes", big[i], range);
    /* an overflowing number with a bad suffix is a syntax error */
    assert_bad("cache_bytes", "99999999999999999999999X", syntax);
}

static void test_env(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    char *env[] = {"PATH=/usr/bin",
                   "RESNETD_THREADS=6",
                   "RESNETD_TOKEN=",
                   "RESNETD_BUILD_DIR=/tmp/build",   /* not an option: ignored */
                   "RESNETD_CONFIG=/nonexistent",     /* read by config_load only */
                   "RESNETD_NOT_AN_OPTION=x",
                   "resnetd_threads=9",                /* names are upper-case */
                   "RESNETD_THREADS_EXTRA=9",
                   "RESNETD_CACHE_BYTES=64M",
                   "RESNETD_INSECURE=yes",
                   "RESNETD_LISTEN=[::]:7000",
                   NULL};
    assert_int_equal(load_text(&c, "threads = 2\ntoken = abc\nmax_jobs_queued = 5\n", &err), 0);
    assert_int_equal(config_load_env(&c, env, &err), 0);
    assert_int_equal(c.threads, 6);
    assert_string_equal(c.token, ""); /* set even when empty */
    assert_int_equal(c.cache_bytes, (size_t)64 << 20);
    assert_int_equal(c.insecure, 1);
    assert_string_equal(c.listen_host, "::");
    assert_int_equal(c.listen_port, 7000);
    assert_int_equal(c.max_jobs_queued, 5); /* from the file, no variable */
    assert_int_equal(config_source(&c, "threads", NULL), CONFIG_FROM_ENV);
    assert_int_equal(config_source(&c, "max_jobs_queued", NULL), CONFIG_FROM_FILE);

    /* every option has its variable */
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++) {
        static const char *const values[CONFIG_OPTION_COUNT] = {
            "127.0.0.1:1", "/d", "/r", "/w", "1", "auto", "1", "1", "1K", "1", "t", "on", "warn",
            "1", "0", "/m.json", "http://m/"};
        char var[128];
        snprintf(var, sizeof var, "%s=%s", option_names[i][1], values[i]);
        char *one[] = {var, NULL};
        config_defaults(&c);
        assert_int_equal(config_load_env(&c, one, &err), 0);
        assert_int_equal(config_source(&c, option_names[i][0], NULL), CONFIG_FROM_ENV);
    }

    /* a bad value names the variable */
    char *bad[] = {"RESNETD_THREADS=lots", NULL};
    config_defaults(&c);
    assert_int_equal(config_load_env(&c, bad, &err), -1);
    assert_string_equal(err.msg, "RESNETD_THREADS: expected a whole number from 0 to 1024 "
                                 "(got 'lots')");
    char *bad_token[] = {"RESNETD_TOKEN=has space", NULL};
    assert_int_equal(config_load_env(&c, bad_token, &err), -1);
    assert_string_equal(err.msg, "RESNETD_TOKEN: expected visible ASCII characters only, "
                                 "without spaces");
    char *spaced[] = {"RESNETD_MAX_PIXELS= 5", NULL}; /* taken as it is, not trimmed */
    assert_int_equal(config_load_env(&c, spaced, &err), -1);
    assert_string_equal(err.msg, "RESNETD_MAX_PIXELS: expected a whole number of at least 1 "
                                 "(got ' 5')");

    /* NULL: the process environment */
    assert_int_equal(setenv("RESNETD_MAX_JOBS_QUEUED", "42", 1), 0);
    config_defaults(&c);
    int rc = config_load_env(&c, NULL, &err);
    unsetenv("RESNETD_MAX_JOBS_QUEUED");
    assert_int_equal(rc, 0);
    assert_int_equal(c.max_jobs_queued, 42);
}

/* One option at a time, as `resnetd train` and `version` read threads and
 * blas_kernel: only that option is read, with the same parser and messages. */
static void test_one_option(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    char *env[] = {"RESNETD_BLAS_KERNEL=auto", "RESNETD_THREADS=lots", NULL};
    config_defaults(&c);
    assert_int_equal(config_load_env_option(&c, "blas_kernel", env, &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);
    assert_int_equal(config_source(&c, "blas_kernel", NULL), CONFIG_FROM_ENV);
    assert_int_equal(c.threads, 0); /* the bad RESNETD_THREADS was not read */
    assert_int_equal(config_load_env_option(&c, "threads", env, &err), -1);
    assert_string_equal(err.msg, "RESNETD_THREADS: expected a whole number from 0 to 1024 "
                                 "(got 'lots')");

    /* unset: nothing changes; a bad value leaves the option as it was */
    char *none[] = {NULL};
    config_defaults(&c);
    assert_int_equal(config_load_env_option(&c, "blas_kernel", none, &err), 0);
    assert_int_equal(config_source(&c, "blas_kernel", NULL), CONFIG_FROM_DEFAULT);
    char *bad[] = {"RESNETD_BLAS_KERNEL=SkylakeX", NULL};
    assert_int_equal(config_load_env_option(&c, "blas_kernel", bad, &err), -1);
    assert_string_equal(err.msg, "RESNETD_BLAS_KERNEL: expected env or auto (got 'SkylakeX')");
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_ENV);

    assert_int_equal(config_load_flag_option(&c, "blas_kernel", "auto", &err), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);
    assert_int_equal(config_source(&c, "blas_kernel", NULL), CONFIG_FROM_FLAG);
    assert_int_equal(config_load_flag_option(&c, "blas_kernel", "", &err), -1);
    assert_string_equal(err.msg, "--blas-kernel: expected env or auto (got '')");
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);

    assert_int_equal(config_load_env_option(&c, "nope", env, &err), -1);
    assert_string_equal(err.msg, "unknown option 'nope'");
    assert_int_equal(config_load_flag_option(&c, "nope", "1", &err), -1);
    assert_string_equal(err.msg, "unknown option 'nope'");
}

static int args_rc(Config *c, Error *err, int argc, char **argv)
{
    config_defaults(c);
    return config_load_args(c, argc, argv, err);
}

#define ARGS(...) (int)(sizeof (char *[]){__VA_ARGS__} / sizeof(char *)), (char *[]){__VA_ARGS__}

static void test_args(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};

    assert_int_equal(args_rc(&c, &err, ARGS("--threads", "3", "--data-dir=/srv/d",
                                            "--cache-bytes", "1G", "--token=x=y",
                                            "--log-level", "error")), 0);
    assert_int_equal(c.threads, 3);
    assert_string_equal(c.data_dir, "/srv/d");
    assert_int_equal(c.cache_bytes, (size_t)1 << 30);
    assert_string_equal(c.token, "x=y");
    assert_int_equal(c.log_level, LOG_LEVEL_ERROR);
    assert_int_equal(config_source(&c, "data_dir", NULL), CONFIG_FROM_FLAG);
    assert_int_equal(config_source(&c, "listen", NULL), CONFIG_FROM_DEFAULT);

    /* --insecure alone is true; a value needs '=' */
    assert_int_equal(args_rc(&c, &err, ARGS("--insecure")), 0);
    assert_int_equal(c.insecure, 1);
    assert_int_equal(args_rc(&c, &err, ARGS("--insecure", "--insecure=no")), 0);
    assert_int_equal(c.insecure, 0);
    assert_int_equal(args_rc(&c, &err, ARGS("--insecure", "false")), -1);
    assert_string_equal(err.msg, "unexpected argument 'false' (serve takes only --flags)");
    assert_int_equal(args_rc(&c, &err, ARGS("--insecure=maybe")), -1);
    assert_string_equal(err.msg, "--insecure: expected true or false (or yes/no, on/off, 1/0) "
                                 "(got 'maybe')");

    /* the last one wins; an empty value with '=' */
    assert_int_equal(args_rc(&c, &err, ARGS("--threads=1", "--threads", "2", "--data-root=")),
                     0);
    assert_int_equal(c.threads, 2);
    assert_string_equal(c.data_root, "");

    /* --config and --print-config are the caller's: skipped */
    assert_int_equal(args_rc(&c, &err, ARGS("--config", "/no/such/file", "--print-config",
                                            "--config=/x", "--max-jobs-queued=9")), 0);
    assert_int_equal(c.max_jobs_queued, 9);

    /* every option has its flag */
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++) {
        static const char *const values[CONFIG_OPTION_COUNT] = {
            "127.0.0.1:1", "/d", "/r", "/w", "1", "auto", "1", "1", "1K", "1", "t", "on", "warn",
            "1", "0", "/m.json", "http://m/"};
        char flag[128];
        snprintf(flag, sizeof flag, "%s=%s", option_names[i][2], values[i]);
        assert_int_equal(args_rc(&c, &err, ARGS(flag)), 0);
        assert_int_equal(config_source(&c, option_names[i][0], NULL), CONFIG_FROM_FLAG);
    }

    const char *known = "(flags: --listen, --data-dir, --data-root, --weights-dir, --threads, "
                        "--blas-kernel, --cache-bytes, --upload-limit, --body-limit, --max-pixels, --token, "
                        "--insecure, --log-level, --max-jobs-queued, --checkpoint-interval, "
                        "--weights-manifest, --weights-mirror, --config, --print-config)";
    char want[512];
    assert_int_equal(args_rc(&c, &err, ARGS("--threads", "2", "--thread", "2")), -1);
    snprintf(want, sizeof want, "unknown flag '--thread' %s", known);
    assert_string_equal(err.msg, want);
    assert_int_equal(args_rc(&c, &err, ARGS("--data_dir=/x")), -1); /* flags use '-' */
    snprintf(want, sizeof want, "unknown flag '--data_dir' %s", known);
    assert_string_equal(err.msg, want);
    assert_int_equal(args_rc(&c, &err, ARGS("--")), -1);
    assert_string_equal(err.msg, "unexpected argument '--' (serve takes only --flags)");
    assert_int_equal(args_rc(&c, &err, ARGS("-t", "2")), -1);
    assert_string_equal(err.msg, "unexpected argument '-t' (serve takes only --flags)");
    assert_int_equal(args_rc(&c, &err, ARGS("--threads")), -1);
    assert_string_equal(err.msg, "--threads: missing value (write --threads=VALUE for a value "
                                 "that starts with --)");
    assert_int_equal(args_rc(&c, &err, ARGS("--token", "--insecure")), -1);
    assert_string_equal(err.msg, "--token: missing value (write --token=VALUE for a value that "
                                 "starts with --)");
    assert_int_equal(args_rc(&c, &err, ARGS("--token=--insecure")), 0);
    assert_string_equal(c.token, "--insecure");
    assert_int_equal(args_rc(&c, &err, ARGS("--threads", "2000")), -1);
    assert_string_equal(err.msg, "--threads: expected a whole number from 0 to 1024 "
                                 "(got '2000')");
    assert_int_equal(args_rc(&c, &err, ARGS("--blas-kernel", "auto")), 0);
    assert_int_equal(c.blas_kernel, BLAS_KERNEL_AUTO);
    assert_int_equal(args_rc(&c, &err, ARGS("--blas-kernel=haswell")), -1);
    assert_string_equal(err.msg, "--blas-kernel: expected env or auto (got 'haswell')");
    assert_int_equal(args_rc(&c, &err, ARGS("--print-config=yes")), -1);
    assert_string_equal(err.msg, "--print-config takes no value");
    assert_int_equal(args_rc(&c, &err, ARGS("--config")), -1);
    assert_string_equal(err.msg, "--config: missing value (write --config=VALUE for a value "
                                 "that starts with --)");
}

static void test_find_flag(void **state)
{
    (void)state;
    const char *v = "unset";
    assert_int_equal(config_find_flag(ARGS("--threads", "2"), "--config", &v), 0);
    assert_string_equal(v, "unset");
    assert_int_equal(config_find_flag(ARGS("--config", "a.conf", "--threads", "2"), "--config",
                                      &v), 1);
    assert_string_equal(v, "a.conf");
    assert_int_equal(config_find_flag(ARGS("--config=a.conf", "--config", "b.conf"), "--config",
                                      &v), 1);
    assert_string_equal(v, "b.conf");
    /* a value is not a flag: "--print-config" here is the value of --token and --data-dir */
    assert_int_equal(config_find_flag(ARGS("--token=--print-config", "--data-dir=--print-config"),
                                      "--print-config", NULL), 0);
    assert_int_equal(config_find_flag(ARGS("--data-dir", "--config", "x"), "--config", &v), 1);
    assert_string_equal(v, "x"); /* a value never starts with "--": --data-dir lacks one */
    assert_int_equal(config_find_flag(ARGS("--data-dir", "x", "--print-config"),
                                      "--print-config", NULL), 1);
    assert_int_equal(config_find_flag(ARGS("--print-config=1"), "--print-config", NULL), -1);
    assert_int_equal(config_find_flag(ARGS("--threads", "2", "--config"), "--config", &v), -1);
    /* unknown flags and other errors do not stop the search */
    assert_int_equal(config_find_flag(ARGS("--nope", "x", "--config", "c.conf"), "--config", &v),
                     1);
    assert_string_equal(v, "c.conf");
    /* "config" without dashes means the same */
    assert_int_equal(config_find_flag(ARGS("--config", "d.conf"), "config", &v), 1);
    assert_string_equal(v, "d.conf");
}

static void test_precedence(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    const char *file = write_conf("threads = 2\nlog_level = warn\ndata_dir = /from-file\n");
    char cfg_env[9000];
    snprintf(cfg_env, sizeof cfg_env, "RESNETD_CONFIG=%s", file);

    /* file < environment < flags, for the same key */
    char *env[] = {"RESNETD_THREADS=3", "RESNETD_LOG_LEVEL=debug", NULL};
    assert_int_equal(config_load(&c, ARGS("--config", (char *)file, "--threads", "4"), env, &err),
                     0);
    assert_int_equal(c.threads, 4);
    assert_int_equal(config_source(&c, "threads", NULL), CONFIG_FROM_FLAG);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    assert_int_equal(config_source(&c, "log_level", NULL), CONFIG_FROM_ENV);
    assert_string_equal(c.data_dir, "/from-file");
    int line = 0;
    assert_int_equal(config_source(&c, "data_dir", &line), CONFIG_FROM_FILE);
    assert_int_equal(line, 3);
    assert_string_equal(c.weights_dir, "/from-file/weights"); /* config_finish ran */
    assert_int_equal(c.max_jobs_queued, 100);

    /* without the flag the environment wins, without both the file */
    assert_int_equal(config_load(&c, ARGS("--config", (char *)file), env, &err), 0);
    assert_int_equal(c.threads, 3);
    char *no_env[] = {NULL};
    assert_int_equal(config_load(&c, ARGS("--config", (char *)file), no_env, &err), 0);
    assert_int_equal(c.threads, 2);
    assert_int_equal(config_load(&c, 0, NULL, no_env, &err), 0);
    assert_int_equal(c.threads, 0);
    assert_string_equal(c.config_file, "");

    /* RESNETD_CONFIG names the file when there is no --config, which beats it */
    char *env_cfg[] = {cfg_env, NULL};
    assert_int_equal(config_load(&c, 0, NULL, env_cfg, &err), 0);
    assert_int_equal(c.threads, 2);
    assert_string_equal(c.config_file, file);
    const char *other = write_conf("threads = 7\n");
    assert_int_equal(config_load(&c, ARGS("--config", (char *)other), env_cfg, &err), 0);
    assert_int_equal(c.threads, 7);
    char *empty_cfg[] = {"RESNETD_CONFIG=", NULL};
    assert_int_equal(config_load(&c, 0, NULL, empty_cfg, &err), 0);
    assert_int_equal(c.threads, 0);

    /* each source's error comes through */
    char *missing_cfg[] = {"RESNETD_CONFIG=/no/such/resnetd.conf", NULL};
    assert_int_equal(config_load(&c, 0, NULL, missing_cfg, &err), -1);
    assert_string_equal(err.msg, "/no/such/resnetd.conf: cannot open the config file: No such "
                                 "file or directory");
    assert_int_equal(config_load(&c, ARGS("--config"), no_env, &err), -1);
    assert_string_equal(err.msg, "--config: missing value (expected a file)");
    char *bad_env[] = {"RESNETD_BODY_LIMIT=1", NULL};
    assert_int_equal(config_load(&c, 0, NULL, bad_env, &err), -1);
    assert_string_equal(err.msg, "RESNETD_BODY_LIMIT: expected a size from 1K to 1G (got '1')");
    assert_int_equal(config_load(&c, ARGS("--bogus"), no_env, &err), -1);
    assert_non_null(strstr(err.msg, "unknown flag '--bogus'"));
    /* config_finish runs last */
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:80"), no_env, &err), -1);
    assert_non_null(strstr(err.msg, "listening on 0.0.0.0:80 requires a token"));
}

static void test_loopback_rule(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    char *no_env[] = {NULL};
    const char *want = "listening on 0.0.0.0:8080 requires a token (--token, RESNETD_TOKEN or "
                       "token in the config file) or --insecure (RESNETD_INSECURE=1, insecure = "
                       "true) to accept requests from anyone";
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:8080"), no_env, &err), -1);
    assert_string_equal(err.msg, want);
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:8080", "--token", "t0k"), no_env,
                                 &err), 0);
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:8080", "--insecure"), no_env,
                                 &err), 0);
    char *env_token[] = {"RESNETD_TOKEN=t0k", NULL};
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:8080"), env_token, &err), 0);
    /* a token given empty again is no token */
    assert_int_equal(config_load(&c, ARGS("--listen", "0.0.0.0:8080", "--token="), env_token,
                                 &err), -1);

    static const char *const loopback[] = {"127.0.0.1:1", "127.1.2.3:1", "localhost:1",
                                           "[::1]:1", "[::ffff:127.0.0.1]:1"};
    for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
        if (config_load(&c, ARGS("--listen", (char *)loopback[i]), no_env, &err))
            fail_msg("%s: %s", loopback[i], err.msg);
    }
    static const char *const exposed[] = {"0.0.0.0:1", "10.0.0.1:1", "128.0.0.1:1", "[::]:1",
                                          "[fe80::1]:1", "[::ffff:10.0.0.1]:1"};
    for (size_t i = 0; i < sizeof exposed / sizeof exposed[0]; i++) {
        assert_int_equal(config_load(&c, ARGS("--listen", (char *)exposed[i]), no_env, &err),
                         -1);
        assert_non_null(strstr(err.msg, "requires a token"));
    }
    assert_int_equal(config_load(&c, ARGS("--listen", "[::]:9"), no_env, &err), -1);
    assert_non_null(strstr(err.msg, "listening on [::]:9 requires a token"));

    /* config_finish alone: weights_dir from data_dir, kept when set */
    config_defaults(&c);
    snprintf(c.data_dir, sizeof c.data_dir, "/srv/resnetd/");
    assert_int_equal(config_finish(&c, &err), 0);
    assert_string_equal(c.weights_dir, "/srv/resnetd/weights");
    config_defaults(&c);
    snprintf(c.weights_dir, sizeof c.weights_dir, "/models");
    assert_int_equal(config_finish(&c, &err), 0);
    assert_string_equal(c.weights_dir, "/models");
    config_defaults(&c);
    memset(c.data_dir, 'd', sizeof c.data_dir - 1);
    c.data_dir[sizeof c.data_dir - 1] = '\0';
    assert_int_equal(config_finish(&c, &err), -1);
    assert_string_equal(err.msg, "weights_dir: the default <data_dir>/weights would be longer "
                                 "than 4095 bytes (data_dir has 4095); set weights_dir");
}

static void test_print(void **state)
{
    (void)state;
    Config c;
    Error err = {{0}};
    const char *file = write_conf("# x\ncache_bytes = 1536M\ndata_root = \"\"\n");
    char *env[] = {"RESNETD_TOKEN=very-secret", "RESNETD_THREADS=5",
                   "RESNETD_WEIGHTS_MIRROR=http://127.0.0.1:9/w", NULL};
    assert_int_equal(config_load(&c, ARGS("--config", (char *)file, "--listen", "[::1]:81",
                                          "--weights-dir", "/w #1", "--insecure",
                                          "--blas-kernel", "auto"), env, &err), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    config_print(&c, out);
    assert_int_equal(fclose(out), 0);
    char from_file[9000];
    char want[20000];
    size_t used = (size_t)snprintf(want, sizeof want,
                                   "# resnetd serve: effective configuration (config file: %s)\n",
                                   file);
    static const char *const lines[][2] = {
        {"listen = [::1]:81", "--listen"},
        {"data_dir = ./var", "default"},
        {"data_root = \"\"", "FILE:3"},
        {"weights_dir = \"/w #1\"", "--weights-dir"},
        {"threads = 5", "RESNETD_THREADS"},
        {"blas_kernel = auto", "--blas-kernel"},
        {"cache_bytes = 1536M", "FILE:2"},
        {"upload_limit = 1G", "default"},
        {"body_limit = 1M", "default"},
        {"max_pixels = 100000000", "default"},
        {"token = (set)", "RESNETD_TOKEN"},
        {"insecure = true", "--insecure"},
        {"log_level = info", "default"},
        {"max_jobs_queued = 100", "default"},
        {"checkpoint_interval = 60", "default"},
        {"weights_manifest = \"\"", "default"},
        {"weights_mirror = http://127.0.0.1:9/w", "RESNETD_WEIGHTS_MIRROR"},
    };
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++) {
        const char *from = lines[i][1];
        if (!strncmp(from, "FILE:", 5)) {
            snprintf(from_file, sizeof from_file, "%s:%s", file, from + 5);
            from = from_file;
        }
        used += (size_t)snprintf(want + used, sizeof want - used, "%-40s# %s\n", lines[i][0],
                                 from);
    }
    assert_string_equal(text, want);
    assert_null(strstr(text, "very-secret"));

    /* the output, but the token line, reads back to the same values */
    *strstr(text, "token = ") = '#';
    Config back;
    assert_int_equal(load_text(&back, text, &err), 0);
    snprintf(back.token, sizeof back.token, "%s", c.token);
    assert_config_equal(&back, &c);
    free(text);

    config_defaults(&c);
    out = open_memstream(&text, &len);
    config_print(&c, out);
    fclose(out);
    assert_non_null(strstr(text, "(config file: none)\n"));
    assert_non_null(strstr(text, "\ntoken = (none) "));
    assert_non_null(strstr(text, "\nweights_dir = \"\" "));
    free(text);
}

/* config/resnetd.conf changes nothing, and its commented-out lines, once
 * uncommented, are exactly the defaults, one line per option, each with its
 * variable and flag documented; docs/configuration.md names them all too. */
static void test_shipped_files(void **state)
{
    (void)state;
    Config c, d;
    Error err = {{0}};
    config_defaults(&d);
    config_defaults(&c);
    if (config_load_file(&c, "config/resnetd.conf", &err))
        fail_msg("%s", err.msg);
    assert_config_equal(&c, &d);
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++)
        assert_int_equal(config_source(&c, option_names[i][0], NULL), CONFIG_FROM_DEFAULT);

    char *text = read_text("config/resnetd.conf");
    char *uncommented = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&uncommented, &len);
    int settings = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        /* "#key = value": a commented-out setting; "# ..." is prose */
        if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
            fprintf(out, "%s\n", line + 1);
            settings++;
        }
    }
    fclose(out);
    free(text);
    assert_int_equal(settings, CONFIG_OPTION_COUNT);
    config_defaults(&c);
    assert_int_equal(load_text(&c, uncommented, &err), 0); /* a key twice would fail */
    assert_config_equal(&c, &d);
    for (int i = 0; i < CONFIG_OPTION_COUNT; i++)
        assert_int_equal(config_source(&c, option_names[i][0], NULL), CONFIG_FROM_FILE);
    free(uncommented);

    const char *files[] = {"config/resnetd.conf", "docs/configuration.md"};
    for (int f = 0; f < 2; f++) {
        text = read_text(files[f]);
        for (int i = 0; i < CONFIG_OPTION_COUNT; i++) {
            for (int k = 0; k < 3; k++) {
                /* whole words: "--threads" must not be found inside "--threads-x" */
                const char *p = text;
                size_t n = strlen(option_names[i][k]);
                int found = 0;
                while (!found && (p = strstr(p, option_names[i][k]))) {
                    char after = p[n];
                    char before = p == text ? ' ' : p[-1];
                    found = !(after == '_' || after == '-' || (after >= 'a' && after <= 'z') ||
                              (after >= 'A' && after <= 'Z')) &&
                            !(before == '_' || before == '-' || (before >= 'a' && before <= 'z'));
                    p += n;
                }
                if (!found)
                    fail_msg("%s does not mention %s", files[f], option_names[i][k]);
            }
        }
        free(text);
    }
}

int main(int argc, char **argv)
{
    testutil_init(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_syntax),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_one_option),
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_find_flag),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_loopback_rule),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_shipped_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
