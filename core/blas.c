/* blas.c: OpenBLAS kernel selection and threads (see blas.h). */
#include "blas.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REEXEC_MARK "RESNETD_BLAS_REEXEC"

/* The best sgemm kernel this CPU can run, among those OpenBLAS 0.3.21 ships. */
static const char *best_kernel_for_cpu(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    return NULL;
}

int blas_select_kernel(char **argv, Error *err)
{
    if (getenv("OPENBLAS_CORETYPE"))
        return 0; /* the user's (or our previous exec's) choice stands */
    const char *want = best_kernel_for_cpu();
    const char *have = openblas_get_corename();
    if (!want || (have && strcasecmp(have, want) == 0))
        return 0;
    if (getenv(REEXEC_MARK))
        return error_set(err, "OpenBLAS kept kernel %s after re-exec", have ? have : "?");
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv(REEXEC_MARK, "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: undo, keep running on the kernel we have */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(REEXEC_MARK);
    return error_set(err, "re-exec with OPENBLAS_CORETYPE=%s failed", want);
}

const char *blas_kernel_name(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

const char *blas_kernel_origin(void)
{
    if (getenv(REEXEC_MARK))
        return "resnetd";
    if (getenv("OPENBLAS_CORETYPE"))
        return "user";
    return "openblas";
}

int blas_set_threads(int n)
{
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
    return n;
}

int blas_threads(void)
{
    return openblas_get_num_threads();
}
