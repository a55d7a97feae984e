/*
 * log.h: one line per event to stderr: "2026-11-28T19:42:33Z info  message".
 * Levels are config.h's LogLevel. Thread-safe (each line is written with one call under the stdio lock).
 */
#ifndef RESNETD_LOG_H
#define RESNETD_LOG_H

#include "config.h" /* LogLevel */

void log_set_level(int level);
int log_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
