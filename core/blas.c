/* blas.c: OpenBLAS kernel selection and threads (see blas.h). */
#include "blas.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Set with OPENBLAS_CORETYPE, to the same kernel, before the re-exec. */
#define REEXEC_MARK "RESNETD_BLAS_REEXEC"

/* Is this process resnetd's re-exec? The mark names the kernel resnetd set, and
 * OPENBLAS_CORETYPE still names it: a mark inherited by a process whose user then
 * set another kernel does not count. */
static int reexecuted(void)
{
    const char *mark = getenv(REEXEC_MARK), *set = getenv("OPENBLAS_CORETYPE");
    return mark && set && !strcasecmp(mark, set);
}

const char *blas_kernel_best(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    return NULL;
}

/* How fast a kernel's sgemm is, by the instruction set of its code in OpenBLAS
 * 0.3.21: 2 for AVX-512 (Cooperlake and SapphireRapids reuse SkylakeX's), 1 for
 * AVX2 (Zen reuses Haswell's), 0 for anything older. */
static int kernel_rank(const char *name)
{
    static const struct {
        const char *name;
        int rank;
    } ranks[] = {
        {"SkylakeX", 2}, {"Cooperlake", 2}, {"SapphireRapids", 2}, {"Haswell", 1}, {"Zen", 1},
    };
    for (size_t i = 0; name && i < sizeof ranks / sizeof ranks[0]; i++)
        if (!strcasecmp(name, ranks[i].name))
            return ranks[i].rank;
    return 0;
}

int blas_select_kernel(char **argv, BlasKernelPolicy policy, Error *err)
{
    const char *want = blas_kernel_best();
    const char *have = openblas_get_corename();
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (reexecuted()) {
        /* say when the re-exec did not help; never loop */
        if (!have || strcasecmp(have, set))
            return error_set(err, "OpenBLAS kept kernel %s after re-exec with "
                             "OPENBLAS_CORETYPE=%s", have ? have : "?", set);
        return 0;
    }
    if (set && policy == BLAS_KERNEL_ENV)
        return 0; /* the user's choice stands */
    /* resnetd picks exactly its kernel (not an equivalent one OpenBLAS chose), so
     * that every CPU of a class runs the same code */
    if (!want || (have && strcasecmp(have, want) == 0))
        return 0;
    char *previous = set ? strdup(set) : NULL;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv(REEXEC_MARK, want, 1);
    execv("/proc/self/exe", argv);
    /* exec failed: undo, keep running on the kernel we have */
    if (previous)
        setenv("OPENBLAS_CORETYPE", previous, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    free(previous);
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
    if (reexecuted())
        return "resnetd";
    if (getenv("OPENBLAS_CORETYPE"))
        return "user";
    return "openblas";
}

int blas_kernel_is_slower(void)
{
    const char *best = blas_kernel_best();
    return best && kernel_rank(openblas_get_corename()) < kernel_rank(best);
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
