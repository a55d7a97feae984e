/*
 * cmd_weights.h: `resnetd weights list|pull` (server/cmd_weights.c), the
 * command line over server/fetch.h.
 */
#ifndef RESNETD_CMD_WEIGHTS_H
#define RESNETD_CMD_WEIGHTS_H

#include <stddef.h>

/* argc/argv: the arguments after "weights". Returns the process exit status: 0,
 * 1 when the command failed, 2 for bad arguments or configuration, 130 when
 * interrupted (SIGINT/SIGTERM; the partial download is kept). Installs its own
 * SIGINT/SIGTERM handlers: call from main only. */
int cmd_weights(int argc, char **argv);

/* For `resnetd train`: when weights names no file but a manifest entry (or
 * "imagenet", with variant), downloads it as `weights pull` would (the same
 * configuration, progress on stderr) and writes its path into path. Returns 0
 * (path set), 1 (not a manifest name: weights is used as it is), -1 (failed:
 * the reason is printed). */
int cmd_weights_for_train(const char *weights, const char *variant, char *path, size_t n);

#endif
