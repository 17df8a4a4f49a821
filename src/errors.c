/*
 * errors.c - return-code texts and the per-thread error detail.
 *
 * The detail is thread-local because a sop_db is shared by threads
 * (libgit2's git_error_last model); it is overwritten by the next failure
 * on the same thread, cleared at the start of each API call and again when
 * a sop.h call succeeds (sop_done), so "" after SOP_OK.
 */
#include "sop_int.h"

#include <stdio.h>

/* errors.def and sop.h must name the same codes with the same numbers: a
 * code of the table that sop.h lacks or numbers differently stops the build
 * here (`make lint` checks the other direction: every code sop.h defines is
 * in the table). */
#define X(name, num, text)                                                                         \
    _Static_assert((name) == (num), #name " differs in errors.def and sop.h");
#include "errors.def"
#undef X

static _Thread_local char err_msg[512];
static _Thread_local int err_os;

const char *sop_strerror(int rc)
{
    switch (rc) {
#define X(name, num, text)                                                                         \
    case num:                                                                                      \
        return text;
#include "errors.def"
#undef X
    default:
        return "unknown error";
    }
}

const char *sop_errmsg(void)
{
    return err_msg;
}

int sop_os_errno(void)
{
    return err_os;
}

int sop_rc_is_retryable(int rc)
{
    return rc == SOP_CONFLICT || rc == SOP_BUSY;
}

void sop_err_clear(void)
{
    err_msg[0] = '\0';
    err_os = 0;
}

static int err_vset(int rc, int os_errno, const char *fmt, va_list ap)
{
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    err_os = os_errno;
    return rc;
}

int sop_err(int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(rc, 0, fmt, ap);
    va_end(ap);
    return rc;
}

int sop_err_os(int rc, int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(rc, os_errno, fmt, ap);
    va_end(ap);
    return rc;
}

int sop_vfs_set_error(int rc, int os_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(rc, os_errno, fmt, ap);
    va_end(ap);
    return rc;
}

int sop_corrupt_at(int line, const char *file, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    snprintf(err_msg, sizeof err_msg, "%s (%s:%d)", buf, base ? base + 1 : file, line);
    err_os = 0;
    return SOP_CORRUPT;
}
