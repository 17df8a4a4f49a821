/*
 * sop.c - the `sop` command-line tool: inspect, edit, dump, load and check a
 * libsop database folder.
 *
 *   sop <db-folder> <command> [arguments] [options]
 *
 * What it promises (docs/CLI.md is the user's page):
 *
 *   (C1) One command, one database open, and each command that writes does
 *        so in one transaction (load: one per batch, see (C4)); the database
 *        is closed (checkpointed) before exit.
 *   (C2) Every bad input is refused before anything is written, with one
 *        line on stderr, "sop: <what>: <why>", and a non-zero exit status
 *        from the table in usage_text (0 ok, 1 usage/bad input, 2 not found,
 *        3 database error, 4 check found problems, 5 already exists).
 *   (C3) Only `create` and `load` may create a database; every other command
 *        opens with SOP_DB_NOCREATE, so a mistyped folder is not created.
 *   (C4) `load` of a regular file validates every line before the first
 *        write; from a pipe, an error in a later batch leaves the earlier
 *        batches committed and says how many items that is (--batch 0: one
 *        transaction, all or nothing).
 *   (C5) `dump` output loads back into an identical store: keys and values
 *        are exact bytes (json.h J1), items in store order (duplicates in
 *        insertion order, restored with sop_add).
 *   (C6) Progress bars go to stderr only when it is a terminal.
 *
 * Text forms. Input keys and values: "0x..." is hex bytes, anything else
 * the text's bytes; `put`'s value "-" reads stdin; in a store with a key
 * spec, keys are tuples parsed by sop_key_parse(). Output: bytes that are
 * printable UTF-8 and do not start with "0x" print as text, others as 0x
 * hex, so printed keys can be typed back; tuple keys print with
 * sop_key_format().
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "sop.h"

/* ------------------------------------------------------------------------ */
/* Exit codes, messages                                                      */
/* ------------------------------------------------------------------------ */

enum {
    EXIT_USAGE = 1,    /* bad arguments or bad input */
    EXIT_NOTFOUND = 2, /* database, store, key or prepared transaction missing */
    EXIT_DBERR = 3,    /* busy, corrupt, I/O, ... */
    EXIT_FINDINGS = 4, /* check found problems */
    EXIT_EXISTS = 5    /* create of an existing store, put --add of a present key */
};

#define LOAD_BATCH_DEFAULT 10000

#define STR_(x) #x
#define STR(x)  STR_(x)

static int progress_line_shown; /* a progress line is on stderr: clear it first */
static int stdout_errno;        /* errno of the first failed write to stdout */

/* 1 if writing to stdout has failed (the caller stops producing output). */
static int stdout_failed(void)
{
    if (!ferror(stdout))
        return 0;
    if (!stdout_errno)
        stdout_errno = errno ? errno : EIO;
    return 1;
}

static void clear_progress_line(void)
{
    if (progress_line_shown) {
        fputs("\r\033[K", stderr);
        progress_line_shown = 0;
    }
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    clear_progress_line();
    fputs("sop: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* Exit code for an engine return code. */
static int exit_for(int rc)
{
    switch (rc) {
    case SOP_OK:
        return 0;
    case SOP_NOTFOUND:
        return EXIT_NOTFOUND;
    case SOP_KEYEXIST:
        return EXIT_EXISTS;
    case SOP_INVAL:
        return EXIT_USAGE;
    default:
        return EXIT_DBERR;
    }
}

/* "sop: <what>: <engine text> (<detail>)" with the exit code for rc. */
static int fail_rc(int rc, const char *what)
{
    const char *detail = sop_errmsg();
    if (rc == SOP_BUSY)
        return fail(EXIT_DBERR, "%s: busy: %s", what, *detail ? detail : sop_strerror(rc));
    if (*detail)
        return fail(exit_for(rc), "%s: %s (%s)", what, sop_strerror(rc), detail);
    return fail(exit_for(rc), "%s: %s", what, sop_strerror(rc));
}

/* ------------------------------------------------------------------------ */
/* Commands and options                                                      */
/* ------------------------------------------------------------------------ */

#define OPT_JSON        (1u << 0)
#define OPT_FROM        (1u << 1)
#define OPT_TO          (1u << 2)
#define OPT_PREFIX      (1u << 3)
#define OPT_REVERSE     (1u << 4)
#define OPT_LIMIT       (1u << 5)
#define OPT_KEYS_ONLY   (1u << 6)
#define OPT_DUP         (1u << 7)
#define OPT_SLOT_LENGTH (1u << 8)
#define OPT_SEPARATE    (1u << 9)
#define OPT_KEY_SPEC    (1u << 10)
#define OPT_ADD         (1u << 11)
#define OPT_RAW         (1u << 12)
#define OPT_BATCH       (1u << 13)

#define OPTS_CREATE (OPT_DUP | OPT_SLOT_LENGTH | OPT_SEPARATE | OPT_KEY_SPEC)

static const struct option_def {
    const char *name;
    unsigned bit;
    int has_value;
} option_defs[] = {
    {"json", OPT_JSON, 0},
    {"from", OPT_FROM, 1},
    {"to", OPT_TO, 1},
    {"prefix", OPT_PREFIX, 1},
    {"reverse", OPT_REVERSE, 0},
    {"limit", OPT_LIMIT, 1},
    {"keys-only", OPT_KEYS_ONLY, 0},
    {"dup", OPT_DUP, 0},
    {"slot-length", OPT_SLOT_LENGTH, 1},
    {"separate-values", OPT_SEPARATE, 0},
    {"key-spec", OPT_KEY_SPEC, 1},
    {"add", OPT_ADD, 0},
    {"raw", OPT_RAW, 0},
    {"batch", OPT_BATCH, 1},
};

struct command;

typedef struct cli {
    const char *db_path;
    const struct command *cmd;
    const char *args[4];
    size_t arg_count;
    unsigned given; /* OPT_* bits seen */
    const char *from, *to, *prefix, *key_spec;
    uint64_t limit, slot_length, batch;
    sop_db *db;
} cli;

typedef struct command {
    const char *name;
    int (*run)(cli *c);
    size_t min_args, max_args;
    unsigned opts;
    const char *usage; /* after "sop <db> " */
    const char *help;
} command;

static int cmd_stores(cli *c);
static int cmd_create(cli *c);
static int cmd_drop(cli *c);
static int cmd_get(cli *c);
static int cmd_put(cli *c);
static int cmd_del(cli *c);
static int cmd_scan(cli *c);
static int cmd_dump(cli *c);
static int cmd_load(cli *c);
static int cmd_check(cli *c);
static int cmd_stat(cli *c);
static int cmd_recover(cli *c);
static int cmd_commit_prepared(cli *c);
static int cmd_rollback_prepared(cli *c);

static const command commands[] = {
    {"stores", cmd_stores, 0, 0, OPT_JSON, "stores [--json]",
     "List the stores: item count, options and key specification.\n"},
    {"create", cmd_create, 1, 1, OPTS_CREATE,
     "create <store> [--dup] [--slot-length N] [--separate-values] [--key-spec SPEC]",
     "Create a store (and the database, if the folder has none).\n"
     "  --dup              several items may share a key\n"
     "  --slot-length N    items per node, " STR(SOP_SLOT_LENGTH_MIN) ".." STR(
         SOP_SLOT_LENGTH_MAX) " (default " STR(SOP_SLOT_LENGTH_DEFAULT) ")\n"
                                                                        "  --separate-values  "
                                                                        "every value in its own "
                                                                        "blob, not in the node\n"
                                                                        "  --key-spec SPEC    "
                                                                        "typed compound keys, "
                                                                        "e.g.\n"
                                                                        "                     "
                                                                        "'(region string, dept "
                                                                        "string, id int64 desc)';\n"
                                                                        "                     "
                                                                        "types: bool int64 uint64 "
                                                                        "double timestamp string "
                                                                        "bytes uuid;\n"
                                                                        "                     each "
                                                                        "field may add asc, desc, "
                                                                        "nullable\n"
                                                                        "Exit 5 if the store "
                                                                        "exists.\n"},
    {"drop", cmd_drop, 1, 1, 0, "drop <store>", "Remove a store and all its items.\n"},
    {"get", cmd_get, 2, 2, OPT_RAW, "get <store> <key> [--raw]",
     "Print the value of a key (the first item with it in a --dup store).\n"
     "  --raw  write the value's exact bytes, without a newline\n"
     "Exit 2 if the key is absent.\n"},
    {"put", cmd_put, 3, 3, OPT_ADD, "put <store> <key> <value> [--add]",
     "Set the value of a key (insert or replace), in one transaction.\n"
     "A value of - is read from stdin (exact bytes).\n"
     "  --add  add only: in a unique store fail with exit 5 if the key is\n"
     "         present; in a --dup store add another item with this key\n"},
    {"del", cmd_del, 2, 2, 0, "del <store> <key>",
     "Remove a key (every item with it in a --dup store). Exit 2 if absent.\n"},
    {"scan", cmd_scan, 1, 1,
     OPT_JSON | OPT_FROM | OPT_TO | OPT_PREFIX | OPT_REVERSE | OPT_LIMIT | OPT_KEYS_ONLY,
     "scan <store> [--from K] [--to K] [--prefix K] [--reverse] [--limit N] [--keys-only] "
     "[--json]",
     "List items in key order, one \"key<TAB>value\" line each.\n"
     "  --from K     start at the first key >= K\n"
     "  --to K       stop before K (the range is [from, to))\n"
     "  --prefix K   only keys starting with K (for a tuple: its first fields)\n"
     "  --reverse    walk the same range from the end\n"
     "  --limit N    at most N items\n"
     "  --keys-only  print keys only\n"
     "  --json       a JSON array of {\"key\":...,\"value\":...}\n"},
    {"dump", cmd_dump, 1, 1, 0, "dump <store>",
     "Write every item to stdout as JSON Lines: {\"key\":K,\"value\":V}, where K and V are\n"
     "JSON strings when the bytes are valid UTF-8, else {\"b64\":\"<base64>\"}.\n"},
    {"load", cmd_load, 1, 2, OPTS_CREATE | OPT_BATCH,
     "load <store> [file] [--batch N] [create options]",
     "Read JSON Lines (the dump format) from file or stdin into a store, creating\n"
     "the store (and database) if needed with the create options (--dup,\n"
     "--slot-length, --separate-values, --key-spec). Existing keys are replaced;\n"
     "in a --dup store every line adds an item. Commits every N items\n"
     "(--batch, default 10000; 0 = one transaction). A regular file is checked\n"
     "completely before the first write; from a pipe, an error leaves earlier\n"
     "batches committed (the message says how many items). Shows progress on a\n"
     "terminal.\n"},
    {"check", cmd_check, 0, 0, OPT_JSON, "check [--json]",
     "Verify the whole database (checksums, tree order and shape, counts, space\n"
     "accounting, log). Prints each finding; exit 0 when clean, 4 when not.\n"},
    {"stat", cmd_stat, 0, 1, OPT_JSON, "stat [store] [--json]",
     "Database counters: log positions, segments, bytes on disk (live and\n"
     "reclaimable), node cache use of this run, prepared transactions; with a\n"
     "store: its item count and options.\n"},
    {"recover", cmd_recover, 0, 0, OPT_JSON, "recover [--json]",
     "List prepared transactions (two-phase commit) awaiting commit or rollback.\n"},
    {"commit-prepared", cmd_commit_prepared, 1, 1, 0, "commit-prepared <id>",
     "Commit a prepared transaction (ids from `recover`). Exit 2 if none.\n"},
    {"rollback-prepared", cmd_rollback_prepared, 1, 1, 0, "rollback-prepared <id>",
     "Roll a prepared transaction back (ids from `recover`). Exit 2 if none.\n"},
};
#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

static const char usage_text[] =
    "usage: sop <db-folder> <command> [arguments] [options]\n"
    "       sop <db-folder> <command> --help\n"
    "       sop --help | --version\n"
    "\n"
    "commands:\n"
    "  stores                      list stores with item counts and options\n"
    "  create <store> [options]    create a store (--dup --slot-length N\n"
    "                              --separate-values --key-spec SPEC)\n"
    "  drop <store>                remove a store and its items\n"
    "  get <store> <key>           print a value\n"
    "  put <store> <key> <value>   insert or replace (--add: add only)\n"
    "  del <store> <key>           remove a key\n"
    "  scan <store> [options]      items in key order (--from K --to K --prefix K\n"
    "                              --reverse --limit N --keys-only)\n"
    "  dump <store>                every item as JSON Lines on stdout\n"
    "  load <store> [file]         JSON Lines from file or stdin into a store\n"
    "  check                       verify the whole database\n"
    "  stat [store]                counters of the database (and a store)\n"
    "  recover                     list prepared transactions\n"
    "  commit-prepared <id>        commit a prepared transaction\n"
    "  rollback-prepared <id>      roll a prepared transaction back\n"
    "\n"
    "--json gives JSON output for stores, scan, stat, recover and check.\n"
    "\n"
    "keys and values: text as typed; 0x<hex> for bytes (0x00ff); a put value of\n"
    "- is read from stdin. In a store with a key spec keys are tuples:\n"
    "'(\"US\", \"Sales\", 42)'. Output prints bytes that are printable UTF-8 (and\n"
    "do not start with 0x) as text, all others as 0x<hex>.\n"
    "\n"
    "Only create and load make a new database; other commands need one.\n"
    "A database folder can be open in one process at a time: while a program\n"
    "has it open, sop reports it busy (exit 3).\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  usage error or bad input (arguments, key, hex, JSON line, value too large)\n"
    "  2  not found (database, store, key, prepared transaction)\n"
    "  3  database error (busy in another process, corrupt, I/O, out of space)\n"
    "  4  check found problems\n"
    "  5  already exists (create of an existing store, put --add of a present key)\n";

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_command_help(const command *cmd)
{
    printf("usage: sop <db-folder> %s\n\n%s", cmd->usage, cmd->help);
}

/* ------------------------------------------------------------------------ */
/* Small helpers: bytes, text forms, numbers                                 */
/* ------------------------------------------------------------------------ */

/* Bytes we own (malloc). */
typedef struct bytes {
    uint8_t *data;
    size_t len;
} bytes;

static void bytes_dispose(bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

static int bytes_set(bytes *b, const void *data, size_t len)
{
    uint8_t *d = malloc(len ? len : 1);
    if (!d)
        return fail(EXIT_DBERR, "out of memory");
    if (len)
        memcpy(d, data, len);
    free(b->data);
    b->data = d;
    b->len = len;
    return 0;
}

static int parse_u64(uint64_t *out, const char *text)
{
    uint64_t v = 0;
    if (!*text)
        return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int is_hex_form(const char *text)
{
    return text[0] == '0' && text[1] == 'x';
}

/* "0x..." -> bytes. */
static int parse_hex(bytes *out, const char *what, const char *text)
{
    const char *h = text + 2;
    size_t n = strlen(h);
    if (n % 2)
        return fail(EXIT_USAGE, "%s: bad hex '%s': odd number of digits", what, text);
    uint8_t *d = malloc(n / 2 + 1);
    if (!d)
        return fail(EXIT_DBERR, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        int v = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (v < 0) {
            free(d);
            return fail(EXIT_USAGE, "%s: bad hex '%s': '%c' is not a hex digit", what, text, ch);
        }
        if (i % 2)
            d[i / 2] = (uint8_t)(d[i / 2] << 4 | v);
        else
            d[i / 2] = (uint8_t)v;
    }
    free(out->data);
    out->data = d;
    out->len = n / 2;
    return 0;
}

/* Printable UTF-8 that does not look like hex: shown as text. */
static int is_display_text(const uint8_t *d, size_t len)
{
    if (len >= 2 && d[0] == '0' && d[1] == 'x')
        return 0;
    if (!json_utf8_valid(d, len))
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] < 0x20 || d[i] == 0x7F)
            return 0;
        if (d[i] == 0xC2 && i + 1 < len && d[i + 1] >= 0x80 && d[i + 1] <= 0x9F)
            return 0; /* C1 control */
    }
    return 1;
}

static void print_display(FILE *f, const uint8_t *d, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (is_display_text(d, len)) {
        if (len) /* d may be NULL when len is 0 */
            fwrite(d, 1, len, f);
        return;
    }
    fputs("0x", f);
    for (size_t i = 0; i < len; i++) {
        putc(hex[d[i] >> 4], f);
        putc(hex[d[i] & 15], f);
    }
}

/* Monotonic seconds. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Progress bar (stderr, terminals only: C6)                                 */
/* ------------------------------------------------------------------------ */

typedef struct progress {
    int is_on;
    const char *label;
    double start_s, shown_s;
    uint64_t total; /* units of done; 0 = unknown */
} progress;

static void progress_start(progress *p, const char *label, uint64_t total)
{
    p->is_on = isatty(STDERR_FILENO);
    p->label = label;
    p->start_s = now_s();
    p->shown_s = p->start_s - 1; /* the first update shows at once */
    p->total = total;
}

static void format_duration(char *buf, size_t cap, double s)
{
    uint64_t t = s < 0 ? 0 : (uint64_t)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%" PRIu64 ":%02u:%02u", t / 3600, (unsigned)(t / 60 % 60),
                 (unsigned)(t % 60));
    else
        snprintf(buf, cap, "%u:%02u", (unsigned)(t / 60), (unsigned)(t % 60));
}

/* items: what is counted for the rate; done/total: the fraction (bytes of
 * input for load, units for check). */
static void progress_show(progress *p, uint64_t items, const char *item_name, uint64_t done)
{
    if (!p->is_on)
        return;
    double t = now_s();
    if (t - p->shown_s < 0.1)
        return;
    p->shown_s = t;
    double elapsed = t - p->start_s;
    double rate = elapsed > 0 ? (double)items / elapsed : 0;
    fprintf(stderr, "\r%s ", p->label);
    if (p->total) {
        double frac = (double)done / (double)p->total;
        if (frac > 1)
            frac = 1;
        char bar[31], eta[32];
        int fill = (int)(frac * 30);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '-', (size_t)(30 - fill));
        bar[30] = 0;
        format_duration(eta, sizeof eta, frac > 0 ? elapsed * (1 - frac) / frac : 0);
        fprintf(stderr, "[%s] %3d%% %" PRIu64 " %s, %.0f %s/s, ETA %s", bar, (int)(frac * 100),
                items, item_name, rate, item_name, eta);
    } else {
        fprintf(stderr, "%" PRIu64 " %s, %.0f %s/s", items, item_name, rate, item_name);
    }
    fputs("\033[K", stderr);
    progress_line_shown = 1;
}

static void progress_end(progress *p)
{
    (void)p;
    clear_progress_line();
}

/* ------------------------------------------------------------------------ */
/* Database, stores, keys                                                    */
/* ------------------------------------------------------------------------ */

static int db_open(cli *c, int may_create)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.flags = may_create ? 0 : SOP_DB_NOCREATE;
    o.txn_time_limit_ms = UINT64_MAX; /* a long dump or scan must not time out */
    int rc = sop_db_open(&c->db, c->db_path, &o);
    switch (rc) {
    case SOP_OK:
        return 0;
    case SOP_NOTFOUND:
        return fail(EXIT_NOTFOUND, "%s: no database there (only create and load make one)",
                    c->db_path);
    case SOP_BUSY:
        return fail(EXIT_DBERR,
                    "%s: database busy: another process has it open (a folder can be open in "
                    "one process at a time; retry when it has closed)",
                    c->db_path);
    case SOP_CORRUPT:
        return fail(EXIT_DBERR, "%s: database is corrupt: %s", c->db_path, sop_errmsg());
    case SOP_VERSION:
        return fail(EXIT_DBERR, "%s: made by a newer libsop: %s", c->db_path, sop_errmsg());
    case SOP_INVAL:
        /* A store made with a custom comparator can only be opened by a
         * program that registers it: the tool cannot guess an order. */
        if (strstr(sop_errmsg(), "comparator"))
            return fail(EXIT_DBERR, "%s: cannot be opened by this tool: %s", c->db_path,
                        sop_errmsg());
        return fail(EXIT_DBERR, "%s: not a libsop database: %s", c->db_path, sop_errmsg());
    default:
        return fail_rc(rc, c->db_path);
    }
}

static int txn_begin(sop_txn **t, cli *c, unsigned flags)
{
    int rc = sop_txn_begin(t, c->db, flags);
    return rc ? fail_rc(rc, "begin transaction") : 0;
}

static int txn_commit(sop_txn **t)
{
    int rc = sop_txn_commit(*t);
    *t = NULL; /* freed whatever commit returned */
    if (rc == SOP_BUSY)
        return fail(EXIT_DBERR, "commit: busy: a prepared transaction holds a key this one "
                                "touches (resolve it: see `recover`)");
    return rc ? fail_rc(rc, "commit") : 0;
}

static int check_store_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SOP_MAX_NAME_LEN)
        return fail(EXIT_USAGE, "store name '%s': must be 1..%d bytes", name, SOP_MAX_NAME_LEN);
    if (!json_utf8_valid((const uint8_t *)name, n))
        return fail(EXIT_USAGE, "store name: not valid UTF-8");
    return 0;
}

/* An open store and what the tool needs to know about it. */
typedef struct store_view {
    const char *name;
    sop_store *store;
    sop_store_info info;
    sop_keyspec *spec; /* NULL: plain byte keys */
} store_view;

static void store_view_dispose(store_view *v)
{
    sop_keyspec_free(v->spec);
    v->spec = NULL;
}

static int store_view_fill(store_view *v, sop_txn *t)
{
    v->info.version = SOP_STORE_INFO_VERSION;
    int rc = sop_store_info_get(&v->info, t, v->store);
    if (rc) {
        char what[300];
        snprintf(what, sizeof what, "store '%s'", v->name);
        return fail_rc(rc, what);
    }
    if (v->info.options.key_spec_len) {
        rc = sop_keyspec_decode(&v->spec, v->info.options.key_spec, v->info.options.key_spec_len);
        if (rc)
            return fail(EXIT_DBERR, "store '%s': key spec unreadable: %s", v->name, sop_errmsg());
    }
    return 0;
}

static int store_open(store_view *v, sop_txn *t, const char *name)
{
    memset(v, 0, sizeof *v);
    v->name = name;
    int rc = check_store_name(name);
    if (rc)
        return rc;
    rc = sop_store_open(&v->store, t, name, 0, NULL);
    if (rc == SOP_NOTFOUND)
        return fail(EXIT_NOTFOUND, "store '%s': no such store", name);
    if (rc) {
        char what[300];
        snprintf(what, sizeof what, "store '%s'", name);
        return fail_rc(rc, what);
    }
    return store_view_fill(v, t);
}

/*
 * A key (or a scan bound, is_bound) from its text form. Keys are checked
 * for length and, in a store with a spec, for fitting it; bounds may be
 * empty or a tuple prefix.
 */
static int parse_key(bytes *out, const store_view *v, const char *what, const char *text,
                     int is_bound)
{
    int rc;
    if (is_hex_form(text)) {
        if ((rc = parse_hex(out, what, text)))
            return rc;
    } else if (v->spec) {
        sop_tuple t;
        sop_val k;
        if (text[strspn(text, " \t\r\n")] != '(') {
            char *spec_text = NULL;
            sop_keyspec_format(&spec_text, v->spec);
            rc = fail(EXIT_USAGE, "%s '%s': store '%s' has typed keys: give a tuple %s", what, text,
                      v->name, spec_text ? spec_text : "");
            sop_key_free(spec_text);
            return rc;
        }
        sop_tuple_start(&t, NULL, 0);
        rc = sop_key_parse(&t, v->spec, text);
        if (rc == SOP_OK)
            rc = sop_tuple_finish(&k, &t);
        if (rc) {
            sop_tuple_dispose(&t);
            return fail(rc == SOP_NOMEM ? EXIT_DBERR : EXIT_USAGE, "%s '%s': %s", what, text,
                        sop_errmsg());
        }
        rc = bytes_set(out, k.data, k.len);
        sop_tuple_dispose(&t);
        if (rc)
            return rc;
    } else if ((rc = bytes_set(out, text, strlen(text)))) {
        return rc;
    }
    if (out->len > SOP_MAX_KEY_LEN)
        return fail(EXIT_USAGE, "%s: too long (%zu bytes; keys are 1..%d bytes)", what, out->len,
                    SOP_MAX_KEY_LEN);
    if (is_bound)
        return 0;
    if (out->len == 0)
        return fail(EXIT_USAGE, "%s: empty (keys are 1..%d bytes)", what, SOP_MAX_KEY_LEN);
    if (v->spec) {
        sop_val k = {out->data, out->len};
        rc = sop_keyspec_check_key(v->spec, &k, 0);
        if (rc)
            return fail(EXIT_USAGE, "%s '%s': does not fit the key spec of store '%s': %s", what,
                        text, v->name, sop_errmsg());
    }
    return 0;
}

/* Print a key: a tuple in a store with a spec, else the display form. */
static void print_key(FILE *f, const store_view *v, const sop_val *k)
{
    if (v->spec) {
        char *text = NULL;
        if (sop_key_format_alloc(&text, v->spec, k, 0) == SOP_OK) {
            fputs(text, f);
            sop_key_free(text);
            return;
        }
    }
    print_display(f, k->data, k->len);
}

static void json_key(FILE *f, const store_view *v, const sop_val *k)
{
    if (v->spec) {
        char *text = NULL;
        if (sop_key_format_alloc(&text, v->spec, k, 0) == SOP_OK) {
            json_write_text(f, text);
            sop_key_free(text);
            return;
        }
    }
    json_write_bytes(f, k->data, k->len);
}

/* Read all of stdin as a value (put ... -). */
static int read_stdin_value(bytes *out)
{
    struct stat st;
    if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size > SOP_MAX_VALUE_LEN)
        return fail(EXIT_USAGE, "value: too large (%" PRIu64 " bytes; at most %u)",
                    (uint64_t)st.st_size, SOP_MAX_VALUE_LEN);
    size_t cap = 65536, len = 0;
    uint8_t *d = malloc(cap);
    if (!d)
        return fail(EXIT_DBERR, "out of memory");
    for (;;) {
        if (len == cap) {
            if (cap > SOP_MAX_VALUE_LEN) {
                free(d);
                return fail(EXIT_USAGE, "value: too large (more than %u bytes from stdin)",
                            SOP_MAX_VALUE_LEN);
            }
            cap *= 2;
            uint8_t *nd = realloc(d, cap);
            if (!nd) {
                free(d);
                return fail(EXIT_DBERR, "out of memory");
            }
            d = nd;
        }
        ssize_t n = read(STDIN_FILENO, d + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(d);
            return fail(EXIT_DBERR, "stdin: %s", strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > SOP_MAX_VALUE_LEN) {
        free(d);
        return fail(EXIT_USAGE, "value: too large (more than %u bytes from stdin)",
                    SOP_MAX_VALUE_LEN);
    }
    free(out->data);
    out->data = d;
    out->len = len;
    return 0;
}

static int parse_value(bytes *out, const char *text)
{
    if (strcmp(text, "-") == 0)
        return read_stdin_value(out);
    if (is_hex_form(text))
        return parse_hex(out, "value", text);
    size_t n = strlen(text);
    if (n > SOP_MAX_VALUE_LEN)
        return fail(EXIT_USAGE, "value: too large (%zu bytes; at most %u)", n, SOP_MAX_VALUE_LEN);
    return bytes_set(out, text, n);
}

/* Store options from --dup, --slot-length, --separate-values, --key-spec;
 * spec_buf receives the encoded spec (SOP_KEYSPEC_MAX_LEN bytes). */
static int build_store_options(sop_store_options *o, uint8_t *spec_buf, const cli *c)
{
    sop_store_options_init(o, SOP_STORE_OPTIONS_VERSION);
    if (c->given & OPT_DUP)
        o->flags |= SOP_STORE_DUPLICATES;
    if (c->given & OPT_SEPARATE)
        o->flags |= SOP_STORE_VALUES_SEPARATE;
    if (c->given & OPT_SLOT_LENGTH) {
        if (c->slot_length < SOP_SLOT_LENGTH_MIN || c->slot_length > SOP_SLOT_LENGTH_MAX)
            return fail(EXIT_USAGE, "--slot-length: %" PRIu64 " is outside %d..%d", c->slot_length,
                        SOP_SLOT_LENGTH_MIN, SOP_SLOT_LENGTH_MAX);
        o->slot_length = (uint32_t)c->slot_length;
    }
    if (c->given & OPT_KEY_SPEC) {
        sop_keyspec *spec = NULL;
        size_t len = 0;
        int rc = sop_keyspec_parse(&spec, c->key_spec);
        if (rc == SOP_OK)
            rc = sop_keyspec_encode(spec_buf, SOP_KEYSPEC_MAX_LEN, &len, spec);
        sop_keyspec_free(spec);
        if (rc)
            return fail(EXIT_USAGE, "--key-spec '%s': %s", c->key_spec, sop_errmsg());
        o->key_spec = spec_buf;
        o->key_spec_len = len;
    }
    return 0;
}

/* Human text of a store's options. */
static void format_options(char *buf, size_t cap, const sop_store_options *o)
{
    snprintf(buf, cap, "%s slot_length=%u values=%s%s%s",
             (o->flags & SOP_STORE_DUPLICATES) ? "dup" : "unique", o->slot_length,
             (o->flags & SOP_STORE_VALUES_SEPARATE) ? "separate" : "inline",
             o->comparator ? " comparator=" : "", o->comparator ? o->comparator : "");
}

static void json_store_fields(FILE *f, const store_view *v)
{
    const sop_store_options *o = &v->info.options;
    fprintf(f,
            "\"items\":%" PRIu64 ",\"duplicates\":%s,\"slot_length\":%u,"
            "\"max_inline_value\":%u,\"values_separate\":%s,\"comparator\":",
            v->info.count, (o->flags & SOP_STORE_DUPLICATES) ? "true" : "false", o->slot_length,
            o->max_inline_value, (o->flags & SOP_STORE_VALUES_SEPARATE) ? "true" : "false");
    if (o->comparator)
        json_write_text(f, o->comparator);
    else
        fputs("null", f);
    fputs(",\"key_spec\":", f);
    char *spec_text = NULL;
    if (v->spec && sop_keyspec_format(&spec_text, v->spec) == SOP_OK)
        json_write_text(f, spec_text);
    else
        fputs("null", f);
    sop_key_free(spec_text);
}

/* ------------------------------------------------------------------------ */
/* stores, create, drop                                                      */
/* ------------------------------------------------------------------------ */

static int cmd_stores(cli *c)
{
    sop_txn *t = NULL;
    char **names = NULL;
    size_t count = 0;
    store_view *views = NULL;
    int json = (c->given & OPT_JSON) != 0, ex;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)))
        goto out;
    int rc = sop_store_list(&names, &count, t);
    if (rc) {
        ex = fail_rc(rc, "list stores");
        goto out;
    }
    views = calloc(count ? count : 1, sizeof *views);
    if (!views) {
        ex = fail(EXIT_DBERR, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++)
        if ((ex = store_open(&views[i], t, names[i])))
            goto out;
    if (json) {
        fputs("[", stdout);
        for (size_t i = 0; i < count; i++) {
            fputs(i ? ",\n {\"name\":" : "\n {\"name\":", stdout);
            json_write_text(stdout, names[i]);
            fputc(',', stdout);
            json_store_fields(stdout, &views[i]);
            fputc('}', stdout);
        }
        fputs(count ? "\n]\n" : "]\n", stdout);
        goto out;
    }
    int name_w = 5, items_w = 5;
    for (size_t i = 0; i < count; i++) {
        char num[32];
        int n = (int)strlen(names[i]);
        name_w = n > name_w ? n : name_w;
        n = snprintf(num, sizeof num, "%" PRIu64, views[i].info.count);
        items_w = n > items_w ? n : items_w;
    }
    printf("%-*s  %*s  %-40s  %s\n", name_w, "STORE", items_w, "ITEMS", "OPTIONS", "KEY SPEC");
    for (size_t i = 0; i < count; i++) {
        char opts[200], *spec_text = NULL;
        format_options(opts, sizeof opts, &views[i].info.options);
        if (views[i].spec)
            sop_keyspec_format(&spec_text, views[i].spec);
        printf("%-*s  %*" PRIu64 "  %-40s  %s\n", name_w, names[i], items_w, views[i].info.count,
               opts, spec_text ? spec_text : "-");
        sop_key_free(spec_text);
    }
out:
    if (views)
        for (size_t i = 0; i < count; i++)
            store_view_dispose(&views[i]);
    free(views);
    sop_store_list_free(names, count);
    sop_txn_abort(t);
    return ex;
}

static int cmd_create(cli *c)
{
    const char *name = c->args[0];
    sop_store_options o;
    uint8_t spec_buf[SOP_KEYSPEC_MAX_LEN];
    sop_txn *t = NULL;
    sop_store *s;
    int ex, rc;
    /* Every option is checked before the database is touched (C2). */
    if ((ex = check_store_name(name)) || (ex = build_store_options(&o, spec_buf, c)))
        return ex;
    if ((ex = db_open(c, 1)) || (ex = txn_begin(&t, c, 0)))
        goto out;
    rc = sop_store_open(&s, t, name, 0, NULL);
    if (rc == SOP_OK) {
        ex = fail(EXIT_EXISTS, "store '%s': already exists", name);
        goto out;
    }
    if (rc != SOP_NOTFOUND || (rc = sop_store_open(&s, t, name, SOP_STORE_CREATE, &o))) {
        char what[300];
        snprintf(what, sizeof what, "store '%s'", name);
        ex = fail_rc(rc, what);
        goto out;
    }
    ex = txn_commit(&t);
out:
    sop_txn_abort(t);
    return ex;
}

static int cmd_drop(cli *c)
{
    const char *name = c->args[0];
    sop_txn *t = NULL;
    int ex, rc;
    if ((ex = check_store_name(name)) || (ex = db_open(c, 0)) || (ex = txn_begin(&t, c, 0)))
        goto out;
    rc = sop_store_remove(t, name);
    if (rc == SOP_NOTFOUND) {
        ex = fail(EXIT_NOTFOUND, "store '%s': no such store", name);
        goto out;
    }
    if (rc) {
        ex = fail_rc(rc, "drop");
        goto out;
    }
    ex = txn_commit(&t);
out:
    sop_txn_abort(t);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* get, put, del                                                             */
/* ------------------------------------------------------------------------ */

static int fail_key_missing(const store_view *v, const bytes *k)
{
    clear_progress_line();
    fputs("sop: key ", stderr);
    sop_val kv = {k->data, k->len};
    print_key(stderr, v, &kv);
    fprintf(stderr, ": not found in store '%s'\n", v->name);
    return EXIT_NOTFOUND;
}

static int cmd_get(cli *c)
{
    sop_txn *t = NULL;
    store_view v = {0};
    bytes key = {0};
    sop_val val;
    int ex, rc;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)) ||
        (ex = store_open(&v, t, c->args[0])) || (ex = parse_key(&key, &v, "key", c->args[1], 0)))
        goto out;
    rc = sop_get(&val, t, v.store, &(sop_val){key.data, key.len});
    if (rc == SOP_NOTFOUND) {
        ex = fail_key_missing(&v, &key);
        goto out;
    }
    if (rc) {
        ex = fail_rc(rc, "get");
        goto out;
    }
    if (c->given & OPT_RAW) {
        if (val.len)
            fwrite(val.data, 1, val.len, stdout);
    } else {
        print_display(stdout, val.data, val.len);
        putchar('\n');
    }
out:
    bytes_dispose(&key);
    store_view_dispose(&v);
    sop_txn_abort(t);
    return ex;
}

static int cmd_put(cli *c)
{
    sop_txn *t = NULL;
    store_view v = {0};
    bytes key = {0}, value = {0};
    int ex, rc;
    if ((ex = parse_value(&value, c->args[2])) || (ex = db_open(c, 0)) ||
        (ex = txn_begin(&t, c, 0)) || (ex = store_open(&v, t, c->args[0])) ||
        (ex = parse_key(&key, &v, "key", c->args[1], 0)))
        goto out;
    sop_val k = {key.data, key.len}, val = {value.data, value.len};
    rc = (c->given & OPT_ADD) ? sop_add(t, v.store, &k, &val) : sop_upsert(t, v.store, &k, &val);
    if (rc == SOP_KEYEXIST) {
        clear_progress_line();
        fputs("sop: key ", stderr);
        print_key(stderr, &v, &k);
        fprintf(stderr, ": already exists in store '%s' (--add)\n", v.name);
        ex = EXIT_EXISTS;
        goto out;
    }
    if (rc) {
        ex = fail_rc(rc, "put");
        goto out;
    }
    ex = txn_commit(&t);
out:
    bytes_dispose(&key);
    bytes_dispose(&value);
    store_view_dispose(&v);
    sop_txn_abort(t);
    return ex;
}

static int cmd_del(cli *c)
{
    sop_txn *t = NULL;
    store_view v = {0};
    bytes key = {0};
    int ex, rc;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, 0)) ||
        (ex = store_open(&v, t, c->args[0])) || (ex = parse_key(&key, &v, "key", c->args[1], 0)))
        goto out;
    rc = sop_remove(t, v.store, &(sop_val){key.data, key.len});
    if (rc == SOP_NOTFOUND) {
        ex = fail_key_missing(&v, &key);
        goto out;
    }
    if (rc) {
        ex = fail_rc(rc, "del");
        goto out;
    }
    ex = txn_commit(&t);
out:
    bytes_dispose(&key);
    store_view_dispose(&v);
    sop_txn_abort(t);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* scan, dump                                                                */
/* ------------------------------------------------------------------------ */

/* Bytewise order, shorter first on a common prefix (the default store order). */
static int key_cmp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int r = n ? memcmp(a, b, n) : 0;
    if (r)
        return r;
    return (a_len > b_len) - (a_len < b_len);
}

/* A half-open range [lo, hi); either end may be absent. */
typedef struct key_range {
    bytes lo, hi;
    int has_lo, has_hi;
} key_range;

static int build_range(key_range *r, const cli *c, const store_view *v)
{
    int ex;
    memset(r, 0, sizeof *r);
    if ((c->given & OPT_FROM) && (ex = parse_key(&r->lo, v, "--from", c->from, 1)))
        return ex;
    r->has_lo = (c->given & OPT_FROM) && r->lo.len > 0;
    if ((c->given & OPT_TO) && (ex = parse_key(&r->hi, v, "--to", c->to, 1)))
        return ex;
    r->has_hi = (c->given & OPT_TO) != 0;
    if (c->given & OPT_PREFIX) {
        bytes p = {0};
        if ((ex = parse_key(&p, v, "--prefix", c->prefix, 1)))
            return ex;
        if (p.len) {
            /* [p, prefix_end(p)): exactly the keys starting with p (K3 for
             * tuples), intersected with --from/--to. */
            size_t end_len = 0;
            uint8_t *end = malloc(p.len);
            if (!end) {
                bytes_dispose(&p);
                return fail(EXIT_DBERR, "out of memory");
            }
            int rc = sop_key_prefix_end(end, p.len, &end_len, &(sop_val){p.data, p.len});
            if (rc == SOP_OK && (!r->has_hi || key_cmp(end, end_len, r->hi.data, r->hi.len) < 0)) {
                bytes_dispose(&r->hi);
                r->hi.data = end;
                r->hi.len = end_len;
                r->has_hi = 1;
            } else {
                free(end); /* no end (all 0xff): the range runs to the last key */
            }
            if (!r->has_lo || key_cmp(p.data, p.len, r->lo.data, r->lo.len) > 0) {
                bytes_dispose(&r->lo);
                r->lo = p;
                r->has_lo = 1;
                p.data = NULL;
            }
        }
        bytes_dispose(&p);
    }
    return 0;
}

static void range_dispose(key_range *r)
{
    bytes_dispose(&r->lo);
    bytes_dispose(&r->hi);
}

static int in_range(const key_range *r, const sop_val *k)
{
    if (r->has_lo && key_cmp(k->data, k->len, r->lo.data, r->lo.len) < 0)
        return 0;
    if (r->has_hi && key_cmp(k->data, k->len, r->hi.data, r->hi.len) >= 0)
        return 0;
    return 1;
}

/* Position on the first item of the range in the walk's direction. */
static int range_first(sop_val *k, sop_val *val, sop_cursor *cur, const key_range *r, int reverse)
{
    int rc;
    if (!reverse)
        return r->has_lo
                   ? sop_cursor_get(k, val, cur, SOP_SEEK_GE, &(sop_val){r->lo.data, r->lo.len})
                   : sop_cursor_get(k, val, cur, SOP_FIRST, NULL);
    if (!r->has_hi || r->hi.len == 0)
        return r->has_hi ? SOP_NOTFOUND : sop_cursor_get(k, val, cur, SOP_LAST, NULL);
    /* the last item below hi: seek hi, step back (or the last item when
     * nothing is >= hi) */
    rc = sop_cursor_get(k, val, cur, SOP_SEEK_GE, &(sop_val){r->hi.data, r->hi.len});
    if (rc == SOP_OK)
        return sop_cursor_get(k, val, cur, SOP_PREV, NULL);
    if (rc == SOP_NOTFOUND)
        return sop_cursor_get(k, val, cur, SOP_LAST, NULL);
    return rc;
}

static int cmd_scan(cli *c)
{
    sop_txn *t = NULL;
    sop_cursor *cur = NULL;
    store_view v = {0};
    key_range r = {0};
    int json = (c->given & OPT_JSON) != 0, keys_only = (c->given & OPT_KEYS_ONLY) != 0;
    int reverse = (c->given & OPT_REVERSE) != 0;
    uint64_t shown = 0;
    int ex, rc;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)) ||
        (ex = store_open(&v, t, c->args[0])) || (ex = build_range(&r, c, &v)))
        goto out;
    if ((rc = sop_cursor_open(&cur, t, v.store))) {
        ex = fail_rc(rc, "scan");
        goto out;
    }
    if (json)
        fputs("[", stdout);
    sop_val k, val;
    for (rc = range_first(&k, &val, cur, &r, reverse); rc == SOP_OK;
         rc = sop_cursor_get(&k, &val, cur, reverse ? SOP_PREV : SOP_NEXT, NULL)) {
        if (!in_range(&r, &k))
            break; /* walked off the range's far end */
        if ((c->given & OPT_LIMIT) && shown >= c->limit)
            break;
        if (json) {
            fputs(shown ? ",\n {\"key\":" : "\n {\"key\":", stdout);
            json_key(stdout, &v, &k);
            if (!keys_only) {
                fputs(",\"value\":", stdout);
                json_write_bytes(stdout, val.data, val.len);
            }
            fputc('}', stdout);
        } else {
            print_key(stdout, &v, &k);
            if (!keys_only) {
                putchar('\t');
                print_display(stdout, val.data, val.len);
            }
            putchar('\n');
        }
        shown++;
        if (stdout_failed())
            break; /* main reports it (or not, for a closed pipe) */
    }
    if (rc != SOP_OK && rc != SOP_NOTFOUND) {
        ex = fail_rc(rc, "scan");
        goto out;
    }
    if (json)
        fputs(shown ? "\n]\n" : "]\n", stdout);
out:
    sop_cursor_close(cur);
    range_dispose(&r);
    store_view_dispose(&v);
    sop_txn_abort(t);
    return ex;
}

static int cmd_dump(cli *c)
{
    sop_txn *t = NULL;
    sop_cursor *cur = NULL;
    store_view v = {0};
    int ex, rc;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)) ||
        (ex = store_open(&v, t, c->args[0])))
        goto out;
    if ((rc = sop_cursor_open(&cur, t, v.store))) {
        ex = fail_rc(rc, "dump");
        goto out;
    }
    sop_val k, val;
    for (rc = sop_cursor_get(&k, &val, cur, SOP_FIRST, NULL); rc == SOP_OK;
         rc = sop_cursor_get(&k, &val, cur, SOP_NEXT, NULL)) {
        fputs("{\"key\":", stdout);
        json_write_bytes(stdout, k.data, k.len);
        fputs(",\"value\":", stdout);
        json_write_bytes(stdout, val.data, val.len);
        fputs("}\n", stdout);
        if (stdout_failed())
            break;
    }
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        ex = fail_rc(rc, "dump");
out:
    sop_cursor_close(cur);
    store_view_dispose(&v);
    sop_txn_abort(t);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* load                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct loader {
    const char *input_name;
    FILE *in;
    char *line;
    size_t line_cap;
    uint64_t line_no;
    uint64_t bytes_read;
    json_buf key, value;
} loader;

/* Parse the next non-blank line into l->key and l->value. Returns 1 for an
 * item, 0 at the end of the input, -1 after reporting an error (its exit
 * code in *ex_out). */
static int loader_next(loader *l, int *ex_out)
{
    char why[300];
    for (;;) {
        ssize_t n = getline(&l->line, &l->line_cap, l->in);
        if (n < 0) {
            if (ferror(l->in)) {
                *ex_out = fail(EXIT_DBERR, "%s: %s", l->input_name, strerror(errno));
                return -1;
            }
            return 0;
        }
        l->line_no++;
        l->bytes_read += (uint64_t)n;
        if (json_blank(l->line, (size_t)n))
            continue;
        int rc = json_parse_item(&l->key, &l->value, l->line, (size_t)n, why, sizeof why);
        if (rc == -2) {
            *ex_out = fail(EXIT_DBERR, "out of memory");
            return -1;
        }
        if (rc) {
            *ex_out = fail(EXIT_USAGE, "%s:%" PRIu64 ": %s", l->input_name, l->line_no, why);
            return -1;
        }
        return 1;
    }
}

/* The checks the engine would make, so that a bad line is found before
 * anything is written (C4). */
static int loader_check_item(const loader *l, const sop_keyspec *spec)
{
    if (l->key.len == 0 || l->key.len > SOP_MAX_KEY_LEN)
        return fail(EXIT_USAGE, "%s:%" PRIu64 ": key: %zu bytes (keys are 1..%d bytes)",
                    l->input_name, l->line_no, l->key.len, SOP_MAX_KEY_LEN);
    if (l->value.len > SOP_MAX_VALUE_LEN)
        return fail(EXIT_USAGE, "%s:%" PRIu64 ": value: too large (%zu bytes; at most %u)",
                    l->input_name, l->line_no, l->value.len, SOP_MAX_VALUE_LEN);
    if (spec) {
        sop_val k = {l->key.data, l->key.len};
        if (sop_keyspec_check_key(spec, &k, 0))
            return fail(EXIT_USAGE, "%s:%" PRIu64 ": key does not fit the key spec: %s",
                        l->input_name, l->line_no, sop_errmsg());
    }
    return 0;
}

static int cmd_load(cli *c)
{
    const char *name = c->args[0];
    loader l = {0};
    sop_store_options o;
    uint8_t spec_buf[SOP_KEYSPEC_MAX_LEN];
    sop_keyspec *spec = NULL;
    sop_txn *t = NULL;
    store_view v = {0};
    progress pg;
    uint64_t total_bytes = 0, items = 0, committed = 0;
    uint64_t batch = (c->given & OPT_BATCH) ? c->batch : LOAD_BATCH_DEFAULT;
    int is_dup, is_checked = 0, ex, rc;
    struct stat st;

    if ((ex = check_store_name(name)) || (ex = build_store_options(&o, spec_buf, c)))
        return ex;
    l.input_name = c->arg_count > 1 ? c->args[1] : "stdin";
    l.in = c->arg_count > 1 ? fopen(c->args[1], "rb") : stdin;
    if (!l.in)
        return fail(EXIT_USAGE, "%s: %s", c->args[1], strerror(errno));
    if (fstat(fileno(l.in), &st) == 0 && S_ISREG(st.st_mode))
        total_bytes = (uint64_t)st.st_size;

    /* What the target store will be: existing (its options must agree with
     * any given) or created by the first batch with the given options. */
    if ((ex = db_open(c, 1)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)))
        goto out;
    rc = sop_store_open(&v.store, t, name, 0, &o);
    v.name = name;
    if (rc == SOP_OK) {
        if ((ex = store_view_fill(&v, t)))
            goto out;
        spec = v.spec;
        v.spec = NULL;
        is_dup = (v.info.options.flags & SOP_STORE_DUPLICATES) != 0;
    } else if (rc == SOP_NOTFOUND) {
        is_dup = (o.flags & SOP_STORE_DUPLICATES) != 0;
        if (o.key_spec_len && sop_keyspec_decode(&spec, o.key_spec, o.key_spec_len)) {
            ex = fail(EXIT_DBERR, "--key-spec: %s", sop_errmsg());
            goto out;
        }
    } else {
        char what[300];
        snprintf(what, sizeof what, "store '%s'", name);
        ex = fail_rc(rc, what);
        goto out;
    }
    sop_txn_abort(t);
    t = NULL;

    /* Pass 1 over a regular file: every line valid before any write. */
    if (total_bytes && fseeko(l.in, 0, SEEK_SET) == 0) {
        progress_start(&pg, "checking", total_bytes);
        while ((rc = loader_next(&l, &ex)) == 1) {
            if ((ex = loader_check_item(&l, spec)))
                goto out;
            if ((++items & 255) == 0)
                progress_show(&pg, items, "items", l.bytes_read);
        }
        progress_end(&pg);
        if (rc < 0)
            goto out;
        if (fseeko(l.in, 0, SEEK_SET) != 0) {
            ex = fail(EXIT_DBERR, "%s: cannot rewind: %s", l.input_name, strerror(errno));
            goto out;
        }
        is_checked = 1;
        items = 0;
        l.line_no = 0;
        l.bytes_read = 0;
    }

    /* Pass 2: load in batches. */
    progress_start(&pg, "loading", total_bytes);
    for (;;) {
        if (!t) {
            if ((ex = txn_begin(&t, c, 0)))
                goto out;
            if ((rc = sop_store_open(&v.store, t, name, SOP_STORE_CREATE, &o))) {
                char what[300];
                snprintf(what, sizeof what, "store '%s'", name);
                ex = fail_rc(rc, what);
                goto out;
            }
        }
        rc = loader_next(&l, &ex);
        if (rc < 0)
            goto out_partial;
        if (rc == 0)
            break;
        if (!is_checked && (ex = loader_check_item(&l, spec)))
            goto out_partial;
        sop_val k = {l.key.data, l.key.len}, val = {l.value.data, l.value.len};
        rc = is_dup ? sop_add(t, v.store, &k, &val) : sop_upsert(t, v.store, &k, &val);
        if (rc) {
            char what[300];
            snprintf(what, sizeof what, "%s:%" PRIu64, l.input_name, l.line_no);
            ex = fail_rc(rc, what);
            goto out_partial;
        }
        items++;
        if (batch && items % batch == 0) {
            if ((ex = txn_commit(&t)))
                goto out_partial;
            committed = items;
        }
        if ((items & 255) == 0)
            progress_show(&pg, items, "items", l.bytes_read);
    }
    ex = txn_commit(&t);
    if (ex == 0)
        committed = items;
    progress_end(&pg);
    if (ex == 0 && pg.is_on) {
        double s = now_s() - pg.start_s;
        fprintf(stderr, "loaded %" PRIu64 " items into '%s' in %.1f s (%.0f items/s)\n", items,
                name, s, s > 0 ? (double)items / s : 0.0);
    }
    goto out;
out_partial:
    if (committed)
        fprintf(
            stderr, "sop: load: %" PRIu64 " items of earlier batches were committed%s\n", committed,
            is_checked ? "" : " (the input is not a regular file: it could not be checked first)");
out:
    clear_progress_line();
    sop_txn_abort(t);
    sop_keyspec_free(spec);
    store_view_dispose(&v);
    free(l.line);
    json_buf_dispose(&l.key);
    json_buf_dispose(&l.value);
    if (l.in && l.in != stdin)
        fclose(l.in);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* check, stat                                                               */
/* ------------------------------------------------------------------------ */

typedef struct check_ctx {
    int json;
    progress pg;
    uint64_t count;
    char **messages; /* --json: kept until the end */
    size_t message_count, message_cap;
    int nomem;
} check_ctx;

static void on_finding(const char *finding, void *ctx_)
{
    check_ctx *ctx = ctx_;
    ctx->count++;
    if (!ctx->json) {
        clear_progress_line();
        printf("%s\n", finding);
        fflush(stdout);
        return;
    }
    if (ctx->message_count == ctx->message_cap) {
        size_t cap = ctx->message_cap ? ctx->message_cap * 2 : 16;
        char **m = realloc(ctx->messages, cap * sizeof *m);
        if (!m) {
            ctx->nomem = 1;
            return;
        }
        ctx->messages = m;
        ctx->message_cap = cap;
    }
    char *copy = strdup(finding);
    if (!copy) {
        ctx->nomem = 1;
        return;
    }
    ctx->messages[ctx->message_count++] = copy;
}

static void on_check_progress(uint64_t done, uint64_t total, void *ctx_)
{
    check_ctx *ctx = ctx_;
    ctx->pg.total = total;
    progress_show(&ctx->pg, done, "units", done);
}

static int cmd_check(cli *c)
{
    check_ctx ctx = {0};
    uint64_t findings = 0;
    int ex, rc;
    ctx.json = (c->given & OPT_JSON) != 0;
    if ((ex = db_open(c, 0)))
        return ex;
    progress_start(&ctx.pg, "checking", 0);
    rc = sop_db_check(&findings, c->db, on_finding, on_check_progress, &ctx);
    progress_end(&ctx.pg);
    if (rc) {
        ex = fail_rc(rc, "check");
        goto out;
    }
    if (ctx.nomem) {
        ex = fail(EXIT_DBERR, "out of memory");
        goto out;
    }
    if (ctx.json) {
        printf("{\"clean\":%s,\"findings\":%" PRIu64 ",\"messages\":[", findings ? "false" : "true",
               findings);
        for (size_t i = 0; i < ctx.message_count; i++) {
            fputs(i ? ",\n " : "\n ", stdout);
            json_write_text(stdout, ctx.messages[i]);
        }
        fputs(ctx.message_count ? "\n]}\n" : "]}\n", stdout);
    } else if (findings) {
        printf("%" PRIu64 " finding%s\n", findings, findings == 1 ? "" : "s");
    } else {
        printf("clean\n");
    }
    ex = findings ? EXIT_FINDINGS : 0;
out:
    for (size_t i = 0; i < ctx.message_count; i++)
        free(ctx.messages[i]);
    free(ctx.messages);
    return ex;
}

/* Percent of used over capacity; 0 when there is no capacity. */
static double percent(uint64_t used, uint64_t capacity)
{
    return capacity ? 100.0 * (double)used / (double)capacity : 0.0;
}

static void json_tree_fields(FILE *out, const sop_store_stat_info *t)
{
    fprintf(out,
            "\"depth\":%u,\"nodes\":%" PRIu64 ",\"leaf_nodes\":%" PRIu64
            ",\"branch_nodes\":%" PRIu64 ",\"leaf_fill\":%.4f,\"branch_fill\":%.4f"
            ",\"node_bytes\":%" PRIu64 ",\"key_bytes\":%" PRIu64 ",\"inline_value_bytes\":%" PRIu64
            ",\"value_blobs\":%" PRIu64 ",\"value_blob_bytes\":%" PRIu64,
            t->depth, t->leaf_nodes + t->branch_nodes, t->leaf_nodes, t->branch_nodes,
            percent(t->leaf_items, t->leaf_capacity) / 100,
            percent(t->branch_children, t->branch_capacity) / 100, t->node_bytes, t->key_bytes,
            t->inline_value_bytes, t->value_blobs, t->value_blob_bytes);
}

/* Walk one store's tree (sop_store_stat). */
static int tree_stat(sop_store_stat_info *out, sop_txn *t, const store_view *v)
{
    out->version = SOP_STORE_STAT_VERSION;
    int rc = sop_store_stat(out, t, v->store);
    if (rc) {
        char what[300];
        snprintf(what, sizeof what, "stat of store '%s'", v->name);
        return fail_rc(rc, what);
    }
    return 0;
}

/* One row per store: `stat` without a store argument. */
typedef struct tree_row {
    const char *name;
    sop_store_stat_info st;
} tree_row;

/* Walk every store before printing anything, so that an error prints no
 * half report. *rows_out is malloc'ed (count entries). */
static int walk_all_stores(tree_row **rows_out, sop_txn *t, char **names, size_t count)
{
    tree_row *rows = calloc(count ? count : 1, sizeof *rows);
    int ex = 0;
    if (!rows)
        return fail(EXIT_DBERR, "out of memory");
    for (size_t i = 0; i < count && !ex; i++) {
        store_view v;
        rows[i].name = names[i];
        if (!(ex = store_open(&v, t, names[i])))
            ex = tree_stat(&rows[i].st, t, &v);
        store_view_dispose(&v);
    }
    if (ex) {
        free(rows);
        rows = NULL;
    }
    *rows_out = rows;
    return ex;
}

static void print_store_rows(const tree_row *rows, size_t count, int json)
{
    if (json) {
        fputs(",\"store_trees\":[", stdout);
        for (size_t i = 0; i < count; i++) {
            fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
            json_write_text(stdout, rows[i].name);
            printf(",\"items\":%" PRIu64 ",", rows[i].st.leaf_items);
            json_tree_fields(stdout, &rows[i].st);
            fputc('}', stdout);
        }
        fputc(']', stdout);
        return;
    }
    if (!count)
        return;
    printf("\n%-20s %12s %5s %10s %9s %12s\n", "store", "items", "depth", "nodes", "leaf fill",
           "node bytes");
    for (size_t i = 0; i < count; i++) {
        const sop_store_stat_info *st = &rows[i].st;
        printf("%-20s %12" PRIu64 " %5u %10" PRIu64 " %8.1f%% %12" PRIu64 "\n", rows[i].name,
               st->leaf_items, st->depth, st->leaf_nodes + st->branch_nodes,
               percent(st->leaf_items, st->leaf_capacity), st->node_bytes);
    }
}

static int cmd_stat(cli *c)
{
    sop_db_stat_info s = SOP_DB_STAT_INIT;
    sop_store_stat_info tree = SOP_STORE_STAT_INIT;
    sop_txn *t = NULL;
    store_view v = {0};
    tree_row *rows = NULL;
    char **names = NULL;
    size_t store_count = 0;
    int json = (c->given & OPT_JSON) != 0, has_store = c->arg_count > 0, ex, rc;
    if ((ex = db_open(c, 0)) || (ex = txn_begin(&t, c, SOP_TXN_READONLY)))
        goto out;
    if ((rc = sop_store_list(&names, &store_count, t))) {
        ex = fail_rc(rc, "list stores");
        goto out;
    }
    /* Tree walks first: the cache counters then include them. */
    if (has_store) {
        if ((ex = store_open(&v, t, c->args[0])) || (ex = tree_stat(&tree, t, &v)))
            goto out;
    } else if ((ex = walk_all_stores(&rows, t, names, store_count))) {
        goto out;
    }
    if ((rc = sop_db_stat(&s, c->db))) {
        ex = fail_rc(rc, "stat");
        goto out;
    }
    uint64_t lookups = s.node_hits + s.node_loads;
    double hit_rate = lookups ? (double)s.node_hits / (double)lookups : 0;
    uint64_t reclaimable = s.disk_bytes > s.live_bytes ? s.disk_bytes - s.live_bytes : 0;
    if (json) {
        fputs("{\"path\":", stdout);
        json_write_text(stdout, c->db_path);
        printf(",\"stores\":%zu,\"last_lsn\":%" PRIu64 ",\"checkpoint_lsn\":%" PRIu64
               ",\"segments\":%" PRIu64 ",\"disk_bytes\":%" PRIu64 ",\"live_bytes\":%" PRIu64
               ",\"reclaimable_bytes\":%" PRIu64 ",\"node_hits\":%" PRIu64
               ",\"node_loads\":%" PRIu64 ",\"cache_hit_rate\":",
               store_count, s.last_lsn, s.checkpoint_lsn, s.segments, s.disk_bytes, s.live_bytes,
               reclaimable, s.node_hits, s.node_loads);
        if (lookups)
            printf("%.4f", hit_rate);
        else
            fputs("null", stdout);
        printf(",\"cache_bytes\":%" PRIu64 ",\"dirty_bytes\":%" PRIu64 ",\"prepared\":%" PRIu64,
               s.cache_bytes, s.dirty_bytes, s.prepared);
        if (has_store) {
            fputs(",\"store\":{\"name\":", stdout);
            json_write_text(stdout, v.name);
            fputc(',', stdout);
            json_store_fields(stdout, &v);
            fputs(",\"tree\":{", stdout);
            json_tree_fields(stdout, &tree);
            fputs("}}", stdout);
        } else {
            print_store_rows(rows, store_count, 1);
        }
        fputs("}\n", stdout);
        goto out;
    }
    printf("database          %s\n", c->db_path);
    printf("stores            %zu\n", store_count);
    printf("last lsn          %" PRIu64 "\n", s.last_lsn);
    printf("checkpoint lsn    %" PRIu64 "\n", s.checkpoint_lsn);
    printf("segments          %" PRIu64 "\n", s.segments);
    printf("disk bytes        %" PRIu64 "\n", s.disk_bytes);
    printf("live bytes        %" PRIu64 "\n", s.live_bytes);
    printf("reclaimable bytes %" PRIu64 "\n", reclaimable);
    if (lookups)
        printf("node cache        %" PRIu64 " hits, %" PRIu64 " loads (%.1f%% hits, this run)\n",
               s.node_hits, s.node_loads, hit_rate * 100);
    else
        printf("node cache        no lookups this run\n");
    printf("cache bytes       %" PRIu64 "\n", s.cache_bytes);
    printf("prepared txns     %" PRIu64 "\n", s.prepared);
    if (!has_store) {
        print_store_rows(rows, store_count, 0);
        goto out;
    }
    char opts[200], *spec_text = NULL;
    format_options(opts, sizeof opts, &v.info.options);
    if (v.spec)
        sop_keyspec_format(&spec_text, v.spec);
    printf("store             %s\n", v.name);
    printf("  items           %" PRIu64 "\n", v.info.count);
    printf("  options         %s max_inline_value=%u\n", opts, v.info.options.max_inline_value);
    printf("  key spec        %s\n", spec_text ? spec_text : "-");
    printf("  depth           %u\n", tree.depth);
    printf("  nodes           %" PRIu64 " (leaves %" PRIu64 ", branches %" PRIu64 ")\n",
           tree.leaf_nodes + tree.branch_nodes, tree.leaf_nodes, tree.branch_nodes);
    printf("  leaf fill       %.1f%% (%" PRIu64 " of %" PRIu64 " slots)\n",
           percent(tree.leaf_items, tree.leaf_capacity), tree.leaf_items, tree.leaf_capacity);
    if (tree.branch_nodes)
        printf("  branch fill     %.1f%% (%" PRIu64 " of %" PRIu64 " slots)\n",
               percent(tree.branch_children, tree.branch_capacity), tree.branch_children,
               tree.branch_capacity);
    else
        printf("  branch fill     - (no branches)\n");
    printf("  node bytes      %" PRIu64 "\n", tree.node_bytes);
    printf("  key bytes       %" PRIu64 "\n", tree.key_bytes);
    printf("  value bytes     %" PRIu64 " inline, %" PRIu64 " in %" PRIu64 " separate blobs\n",
           tree.inline_value_bytes, tree.value_blob_bytes, tree.value_blobs);
    sop_key_free(spec_text);
out:
    free(rows);
    store_view_dispose(&v);
    sop_store_list_free(names, store_count);
    sop_txn_abort(t);
    return ex;
}

/* ------------------------------------------------------------------------ */
/* recover, commit-prepared, rollback-prepared                               */
/* ------------------------------------------------------------------------ */

static int cmd_recover(cli *c)
{
    sop_prepared_info *list = NULL;
    size_t count = 0;
    int json = (c->given & OPT_JSON) != 0, ex, rc;
    if ((ex = db_open(c, 0)))
        return ex;
    if ((rc = sop_db_prepared_list(NULL, 0, &count, c->db)))
        return fail_rc(rc, "recover");
    if (count) {
        list = calloc(count, sizeof *list);
        if (!list)
            return fail(EXIT_DBERR, "out of memory");
        if ((rc = sop_db_prepared_list(list, count, &count, c->db))) {
            free(list);
            return fail_rc(rc, "recover");
        }
    }
    if (json) {
        fputs("[", stdout);
        for (size_t i = 0; i < count; i++) {
            printf("%s{\"id\":%" PRIu64 ",\"lsn\":%" PRIu64 ",\"xid\":", i ? ",\n " : "\n ",
                   list[i].id, list[i].lsn);
            json_write_bytes(stdout, list[i].xid, list[i].xid_len);
            fputc('}', stdout);
        }
        fputs(count ? "\n]\n" : "]\n", stdout);
    } else if (count == 0) {
        printf("no prepared transactions\n");
    } else {
        printf("%-20s  %-20s  %s\n", "ID", "LSN", "XID");
        for (size_t i = 0; i < count; i++) {
            printf("%-20" PRIu64 "  %-20" PRIu64 "  ", list[i].id, list[i].lsn);
            if (list[i].xid_len)
                print_display(stdout, list[i].xid, list[i].xid_len);
            else
                fputs("-", stdout);
            putchar('\n');
        }
    }
    free(list);
    return 0;
}

static int resolve_prepared(cli *c, int commit)
{
    uint64_t id;
    int ex, rc;
    if (parse_u64(&id, c->args[0]))
        return fail(EXIT_USAGE, "prepared transaction id '%s': expected a decimal number",
                    c->args[0]);
    if ((ex = db_open(c, 0)))
        return ex;
    rc = commit ? sop_db_prepared_commit(c->db, id) : sop_db_prepared_rollback(c->db, id);
    if (rc == SOP_NOTFOUND)
        return fail(EXIT_NOTFOUND, "prepared transaction %" PRIu64 ": not found (see `recover`)",
                    id);
    return rc ? fail_rc(rc, commit ? "commit-prepared" : "rollback-prepared") : 0;
}

static int cmd_commit_prepared(cli *c)
{
    return resolve_prepared(c, 1);
}

static int cmd_rollback_prepared(cli *c)
{
    return resolve_prepared(c, 0);
}

/* ------------------------------------------------------------------------ */
/* main: arguments                                                           */
/* ------------------------------------------------------------------------ */

static int is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static int parse_args(cli *c, int argc, char **argv)
{
    int options_done = 0;
    const command *cmd = c->cmd;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && strcmp(a, "--") == 0) {
            options_done = 1;
            continue;
        }
        if (!options_done && a[0] == '-' && a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
            const struct option_def *d = NULL;
            for (size_t j = 0; j < sizeof option_defs / sizeof option_defs[0]; j++)
                if (strlen(option_defs[j].name) == name_len &&
                    memcmp(option_defs[j].name, name, name_len) == 0)
                    d = &option_defs[j];
            if (!d || !(cmd->opts & d->bit))
                return fail(EXIT_USAGE, "%s: unknown option '%.*s' (see sop <db> %s --help)",
                            cmd->name, (int)(name_len + 2), a, cmd->name);
            const char *value = NULL;
            if (d->has_value) {
                if (eq)
                    value = eq + 1;
                else if (i + 1 < argc)
                    value = argv[++i];
                else
                    return fail(EXIT_USAGE, "%s: option --%s needs a value", cmd->name, d->name);
            } else if (eq) {
                return fail(EXIT_USAGE, "%s: option --%s takes no value", cmd->name, d->name);
            }
            c->given |= d->bit;
            switch (d->bit) {
            case OPT_FROM:
                c->from = value;
                break;
            case OPT_TO:
                c->to = value;
                break;
            case OPT_PREFIX:
                c->prefix = value;
                break;
            case OPT_KEY_SPEC:
                c->key_spec = value;
                break;
            case OPT_LIMIT:
                if (parse_u64(&c->limit, value))
                    return fail(EXIT_USAGE, "--limit '%s': expected a number", value);
                break;
            case OPT_SLOT_LENGTH:
                if (parse_u64(&c->slot_length, value))
                    return fail(EXIT_USAGE, "--slot-length '%s': expected a number", value);
                break;
            case OPT_BATCH:
                if (parse_u64(&c->batch, value))
                    return fail(EXIT_USAGE, "--batch '%s': expected a number", value);
                break;
            default:
                break;
            }
            continue;
        }
        if (c->arg_count == cmd->max_args)
            return fail(EXIT_USAGE, "%s: unexpected argument '%s' (usage: sop <db> %s)", cmd->name,
                        a, cmd->usage);
        c->args[c->arg_count++] = a;
    }
    if (c->arg_count < cmd->min_args)
        return fail(EXIT_USAGE, "%s: missing argument (usage: sop <db> %s)", cmd->name, cmd->usage);
    return 0;
}

int main(int argc, char **argv)
{
    cli c = {0};
    int ex;
    /* A closed reader (sop ... | head) must not kill us with the database
     * open: we see EPIPE instead, stop, and close cleanly. */
    signal(SIGPIPE, SIG_IGN);

    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!is_help(argv[i]))
            continue;
        const command *cmd = argc > 2 ? find_command(argv[2]) : NULL;
        if (!cmd && argc > 1)
            cmd = find_command(argv[1]);
        if (cmd)
            print_command_help(cmd);
        else
            fputs(usage_text, stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("sop (libsop) %s\n", SOP_VERSION_STRING);
        return 0;
    }
    if (argc < 2)
        return fail(EXIT_USAGE, "missing database folder and command (see sop --help)");
    if (argv[1][0] == '-' && argv[1][1] == '-')
        return fail(EXIT_USAGE,
                    "%s: unknown option (usage: sop <db-folder> <command>; see sop "
                    "--help)",
                    argv[1]);
    if (argc < 3)
        return fail(EXIT_USAGE, "missing command after '%s' (see sop --help)", argv[1]);
    c.db_path = argv[1];
    c.cmd = find_command(argv[2]);
    if (!c.cmd) {
        if (find_command(argv[1]))
            return fail(EXIT_USAGE, "the database folder comes first: sop <db-folder> %s ...",
                        argv[1]);
        return fail(EXIT_USAGE, "%s: unknown command (see sop --help)", argv[2]);
    }
    if ((ex = parse_args(&c, argc, argv)))
        return ex;

    ex = c.cmd->run(&c);

    if (c.db) {
        int rc = sop_db_close(c.db);
        if (rc && !ex)
            ex = fail_rc(rc, "close");
    }
    if (fflush(stdout) != 0 && !stdout_errno)
        stdout_errno = errno;
    if (stdout_failed() || stdout_errno) {
        /* EPIPE: the reader stopped early (| head); that is its choice. */
        if (stdout_errno != EPIPE && !ex)
            ex = fail(EXIT_DBERR, "stdout: %s", strerror(stdout_errno));
    }
    return ex;
}
