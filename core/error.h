/*
 * error.h: the status convention shared by core/ and server/.
 *
 * Functions that can fail return 0 on success and -1 on failure, and write a
 * human-readable reason into a caller-supplied Error (which may be NULL when the
 * caller does not care). Library code never exits and never prints.
 */
#ifndef RESNETD_ERROR_H
#define RESNETD_ERROR_H

#define ERROR_MSG_MAX 512

typedef struct Error {
    char msg[ERROR_MSG_MAX];
} Error;

/* Formats the reason into err (when not NULL) and returns -1, so a failing
 * function can end with `return error_set(err, "...", ...);`. */
int error_set(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing reason (for adding context on the way up). */
int error_wrap(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
