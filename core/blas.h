/*
 * blas.h: OpenBLAS kernel selection and thread count.
 *
 * Debian's OpenBLAS 0.3.21 does not always recognise the CPU and may fall back to
 * a slow kernel. The kernel is chosen when the library loads, from the environment
 * variable OPENBLAS_CORETYPE, so the only way to change it is to set the variable
 * and re-exec the process. blas_select_kernel does that at most once: it sets
 * RESNETD_BLAS_REEXEC to the same kernel as OPENBLAS_CORETYPE, and a process
 * that finds both naming one kernel is the re-exec. By default it does so only
 * when the user has not set OPENBLAS_CORETYPE.
 */
#ifndef RESNETD_BLAS_H
#define RESNETD_BLAS_H

#include "error.h"

/* Who has the last word on the kernel (server/config.c's blas_kernel option,
 * whose values "env" and "auto" are these, in this order). */
typedef enum {
    BLAS_KERNEL_ENV,  /* a set OPENBLAS_CORETYPE stands; unset, resnetd picks the best */
    BLAS_KERNEL_AUTO, /* resnetd picks the best for this CPU even over OPENBLAS_CORETYPE */
} BlasKernelPolicy;

/* Call first in main(), before threads exist (and after reading the policy).
 * When the policy lets resnetd choose and OpenBLAS runs another kernel than the
 * best for this CPU (blas_kernel_best), sets OPENBLAS_CORETYPE to it and re-execs
 * /proc/self/exe with the same argv; does not return in that case. Returns 0 when
 * nothing had to change, -1 (with the reason) when the re-exec failed or did not
 * change the kernel, in which case the process carries on with the kernel it has.
 * A process started by that re-exec never re-execs again. */
int blas_select_kernel(char **argv, BlasKernelPolicy policy, Error *err);

/* The kernel OpenBLAS runs (e.g. "SkylakeX"), or "unknown". */
const char *blas_kernel_name(void);

/* Where the kernel choice came from: "user" (OPENBLAS_CORETYPE set by the user),
 * "resnetd" (set by blas_select_kernel), or "openblas" (its own detection). */
const char *blas_kernel_origin(void);

/* The kernel resnetd picks for this CPU among those OpenBLAS 0.3.21 ships:
 * "SkylakeX" (AVX-512 F, BW, VL and DQ), "Haswell" (AVX2 and FMA), or NULL when
 * the CPU has neither (OpenBLAS's own choice is then as good as any). */
const char *blas_kernel_best(void);

/* 1 when the kernel in force has slower sgemm kernels than blas_kernel_best()
 * (an AVX2 kernel such as Haswell or Zen on an AVX-512 CPU, or an older one),
 * else 0. Kernels that share the best one's sgemm code (Cooperlake and
 * SapphireRapids for SkylakeX, Zen for Haswell) are not slower. */
int blas_kernel_is_slower(void);

/* Sets the threads used by OpenBLAS and by resnetd's own loops; n <= 0 means one
 * per online core. Returns the count in effect. Not thread-safe: call at start-up
 * or from the thread that runs the model. */
int blas_set_threads(int n);
int blas_threads(void);

#endif
