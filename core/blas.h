/*
 * blas.h: OpenBLAS kernel selection and thread count.
 *
 * Debian's OpenBLAS 0.3.21 does not always recognise the CPU and may fall back to
 * a slow kernel. The kernel is chosen when the library loads, from the environment
 * variable OPENBLAS_CORETYPE, so the only way to change it is to set the variable
 * and re-exec the process. blas_select_kernel does that once, and only when the
 * user has not set OPENBLAS_CORETYPE.
 */
#ifndef RESNETD_BLAS_H
#define RESNETD_BLAS_H

#include "error.h"

/* Call first in main(), before threads exist. When OPENBLAS_CORETYPE is unset and
 * the CPU supports a faster sgemm kernel than the one OpenBLAS picked (SkylakeX
 * with AVX-512, Haswell with AVX2 and FMA), sets OPENBLAS_CORETYPE and re-execs
 * /proc/self/exe with the same argv; does not return in that case. Returns 0 when
 * nothing had to change, -1 (with the reason) when the re-exec failed, in which
 * case the process carries on with the current kernel. */
int blas_select_kernel(char **argv, Error *err);

/* The kernel OpenBLAS runs (e.g. "SkylakeX"). */
const char *blas_kernel_name(void);

/* Where the kernel choice came from: "user" (OPENBLAS_CORETYPE set by the user),
 * "resnetd" (set by blas_select_kernel), or "openblas" (its own detection). */
const char *blas_kernel_origin(void);

/* Sets the threads used by OpenBLAS and by resnetd's own loops; n <= 0 means one
 * per online core. Returns the count in effect. Not thread-safe: call at start-up
 * or from the thread that runs the model. */
int blas_set_threads(int n);
int blas_threads(void);

#endif
