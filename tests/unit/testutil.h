/*
 * testutil.h: helpers shared by the C unit tests (cmocka).
 * Reference data written by tests/reference/make_reference.py lives in
 * $RESNETD_REF_DIR (tests/run.sh sets it); scratch files go in a fresh temp dir.
 */
#ifndef RESNETD_TESTUTIL_H
#define RESNETD_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/* Path of a file in the reference dir (static buffer, valid until the next call).
 * Fails the current test when RESNETD_REF_DIR is unset. */
const char *testutil_ref_path(const char *name);

/* A fresh directory under $TMPDIR (or /tmp), created once per process. */
const char *testutil_tmpdir(void);

/* Joins testutil_tmpdir() and name (static buffer, valid until the next call). */
const char *testutil_tmp_path(const char *name);

/* Writes len bytes to path; fails the test on error. */
void testutil_write_file(const char *path, const void *data, size_t len);

/* max |got-want| / max(|want|_inf, floor), printed and asserted <= tol. */
void testutil_assert_close(const float *got, const float *want, size_t n, double tol,
                           double floor, const char *what);

/* ||got-want||_2 / max(||want||_2, floor), printed and asserted <= tol. */
void testutil_assert_close_norm(const float *got, const float *want, size_t n, double tol,
                                double floor, const char *what);

/* Deterministic fill with uniform values in [lo, hi). */
void testutil_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);

/* Makes the unit tests use the fast OpenBLAS kernel (may re-exec the binary). */
void testutil_init(int argc, char **argv);

#endif
