/*
 * h5_to_safetensors.c: the C twin of tools/h5_to_safetensors.py, reading through
 * core/h5weights.c (the reader resnetd uses for .h5 weights).
 *
 *   build/tools/h5_to_safetensors IN.h5 OUT.safetensors
 *
 * Writes the tensors in file order as F32 with the metadata the Python converter
 * writes (format, variant, preprocess, source), so for every file both accept the
 * two outputs are the same bytes: tests/tools/test_h5_native.py compares them to
 * check that resnetd reads a .h5 exactly as the converter does. resnetd itself
 * needs no conversion (it reads .h5 directly); this converts once for files that
 * are read often (safetensors are mapped, not parsed).
 * Exit status: 0 written, 2 usage, 1 any other error (the message names the file
 * and the problem; nothing is written).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "h5weights.h"
#include "safetensors.h"

_Static_assert(H5WEIGHTS_MAX_DIMS == SAFETENSORS_MAX_DIMS, "shapes are copied whole");

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: h5_to_safetensors IN.h5 OUT.safetensors\n");
        return 2;
    }
    const char *in = argv[1], *out = argv[2];
    Error err;
    H5Weights *h;
    if (h5weights_open(&h, in, &err)) {
        fprintf(stderr, "h5_to_safetensors: %s\n", err.msg);
        return 1;
    }
    int n = h5weights_count(h), rc = 1;
    StEntry *entries = calloc((size_t)n + 1, sizeof *entries);
    float **data = calloc((size_t)n + 1, sizeof *data);
    if (!entries || !data) {
        fprintf(stderr, "h5_to_safetensors: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const H5Tensor *t = h5weights_tensor(h, i);
        size_t numel = 1;
        int fits = 1;
        for (int d = 0; d < t->ndim; d++) {
            fits = fits && (t->shape[d] == 0 || numel <= SIZE_MAX / sizeof(float) /
                                                             (size_t)t->shape[d]);
            numel *= (size_t)t->shape[d];
        }
        data[i] = fits ? malloc(numel * sizeof(float) + 1) : NULL;
        if (!data[i]) {
            fprintf(stderr, "h5_to_safetensors: %s: out of memory for '%s'\n", in, t->name);
            goto done;
        }
        if (h5weights_read_f32(h, i, data[i], &err)) {
            fprintf(stderr, "h5_to_safetensors: %s\n", err.msg);
            goto done;
        }
        entries[i].name = t->name;
        entries[i].ndim = t->ndim;
        memcpy(entries[i].shape, t->shape, sizeof t->shape);
        entries[i].data = data[i];
    }
    const char *slash = strrchr(in, '/');
    const char *meta[] = {"format", "keras", "variant", "keras", "preprocess", "caffe",
                          "source", slash ? slash + 1 : in};
    if (safetensors_write(out, entries, n, meta, 4, &err)) {
        fprintf(stderr, "h5_to_safetensors: %s\n", err.msg);
        goto done;
    }
    printf("wrote %s: %d tensors (variant keras, preprocess caffe)\n", out, n);
    rc = 0;
done:
    for (int i = 0; data && i < n; i++)
        free(data[i]);
    free(data);
    free(entries);
    h5weights_close(h);
    return rc;
}
