/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"

const char *testutil_ref_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("RESNETD_REF_DIR");
    if (!dir || !*dir)
        fail_msg("RESNETD_REF_DIR is not set: run the tests through tests/run.sh (make test)");
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static char tmpdir_path[4096];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

/* Scratch files hold whole ResNet50 weight files: never leave them behind. */
static void remove_tmpdir(void)
{
    if (tmpdir_path[0])
        nftw(tmpdir_path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *testutil_tmpdir(void)
{
    char *dir = tmpdir_path;
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof tmpdir_path, "%s/resnetd-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir))
            fail_msg("mkdtemp failed");
        atexit(remove_tmpdir);
    }
    return dir;
}

const char *testutil_tmp_path(const char *name)
{
    static char buf[8192];
    if (snprintf(buf, sizeof buf, "%s/%s", testutil_tmpdir(), name) >= (int)sizeof buf)
        fail_msg("scratch path too long: %s", name);
    return buf;
}

void testutil_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

void testutil_assert_close(const float *got, const float *want, size_t n, double tol,
                           double floor, const char *what)
{
    double maxdiff = 0, maxref = floor;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= maxdiff)) { maxdiff = d; worst = i; }
        if (fabs(want[i]) > maxref) maxref = fabs(want[i]);
    }
    double rel = maxdiff / maxref;
    if (!(rel <= tol)) {
        print_error("%s: relative error %.3g > %.3g (worst at %zu: got %.8g want %.8g)\n",
                    what, rel, tol, worst, got[worst], want[worst]);
        fail();
    }
}

void testutil_assert_close_norm(const float *got, const float *want, size_t n, double tol,
                                double floor, const char *what)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    num = sqrt(num);
    den = sqrt(den);
    if (den < floor) den = floor;
    if (!(num / den <= tol)) {
        print_error("%s: ||got-want||/||want|| = %.3g > %.3g (||want|| = %.4g)\n", what,
                    num / den, tol, den);
        fail();
    }
}

void testutil_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

void testutil_init(int argc, char **argv)
{
    (void)argc;
    blas_select_kernel(argv, BLAS_KERNEL_ENV, NULL);
}
