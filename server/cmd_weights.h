/*
 * cmd_weights.h: `resnetd weights list|pull` (server/cmd_weights.c), the
 * command line over server/fetch.h.
 */
#ifndef RESNETD_CMD_WEIGHTS_H
#define RESNETD_CMD_WEIGHTS_H

/* argc/argv: the arguments after "weights". Returns the process exit status: 0,
 * 1 when the command failed, 2 for bad arguments or configuration, 130 when
 * interrupted (SIGINT/SIGTERM; the partial download is kept). Installs its own
 * SIGINT/SIGTERM handlers: call from main only. */
int cmd_weights(int argc, char **argv);

#endif
