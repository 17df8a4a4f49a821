/*
 * test_newest.c - damage to the NEWEST log segment of a database whose
 * process died without closing.
 *
 * Why: recovery cuts an invalid tail off the newest segment, because a
 * crash leaves one there. The other campaigns only damage what a crash can
 * damage (unsynced bytes), so they never asked whether recovery tells such
 * a tail from damage in the middle of records that were synced, followed by
 * more valid records - which is media or operator damage, and must be
 * reported, not cut off with every acknowledged commit after it.
 *
 * Two templates are built once, each by a "process" that makes COMMITS
 * SOP_SYNC_FULL commits (key c<i> -> a value of its own) and then dies
 * (sop_db__crash_close: no checkpoint, no close):
 *   small  - every commit in the one segment, some values in their own blob;
 *   multi  - 1 MiB segments, 20 KB values (each a VALUE blob), a checkpoint
 *            after commit 40: the newest segment is one of several.
 * Each case copies a template, damages its newest segment, and opens it in
 * a forked child with an alarm (a FIFO can make open block: a hang is a
 * failure, as is a crash). The oracle: open returns an error (SOP_CORRUPT,
 * SOP_IOERR or SOP_INVAL), or every acknowledged commit is present, byte
 * for byte, with sop_db_check clean; then one more commit, close, reopen,
 * everything again. Damage confined to the LAST record of the segment (or
 * a cut inside it) cannot be told from a torn append, so there the last
 * commit may be missing (class "tail", marked relaxed); nowhere else. (The
 * last commit's records: its value blobs and its TXN record.)
 *
 * Damage classes: the segment header record; a middle record's header
 * fields (magic, type, version, length, CRC, LSN), payload and padding;
 * single bit flips at random positions; zeroed ranges; truncation inside
 * and between middle records; deletion; a FIFO; a symlink to /dev/zero.
 * SOP_NEWEST_RANDOM (default 24) random flips/zeroings/truncations per
 * template. Summary: "campaign newest: cases N failures F acked A".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "tutil.h"

#define COMMITS     100
#define REC_HDR     24
#define REC_MAGIC   0x52504F53u
#define OPEN_ALARM  5 /* seconds a case may take in its child (a hang is a failure) */
#define MAX_RECORDS 4096

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef enum tmpl { T_SMALL, T_MULTI, T_COUNT } tmpl;
static const char *const tmpl_names[T_COUNT] = {"small", "multi"};

static size_t value_of(uint8_t *buf, tmpl t, int i)
{
    size_t len = t == T_MULTI ? 20000 + (size_t)i : i % 10 == 9 ? 3000 : 40;
    int n = snprintf((char *)buf, 32, "value %d;", i);
    for (size_t j = (size_t)n; j < len; j++)
        buf[j] = (uint8_t)(i * 7 + (int)j * 13);
    return len;
}

static sop_db_options opts(void)
{
    sop_db_options o = SOP_DB_OPTIONS_INIT;
    o.segment_bytes = 1u << 20;
    return o;
}

/* Build template @p t in @p dir; returns the number of acknowledged commits. */
static int build(const char *dir, tmpl t)
{
    static uint8_t val[32000];
    sop_db *db;
    sop_db_options o = opts();
    int rc = sop_db_open(&db, dir, &o), acked = 0;
    if (rc)
        return -1;
    for (int i = 0; i < COMMITS; i++) {
        sop_txn *tx;
        sop_store *s;
        char kb[16];
        snprintf(kb, sizeof kb, "c%03d", i);
        sop_val k = {kb, strlen(kb)}, v = {val, value_of(val, t, i)};
        if (sop_txn_begin(&tx, db, 0) || sop_store_open(&s, tx, "n", SOP_STORE_CREATE, NULL) ||
            sop_upsert(tx, s, &k, &v))
            break;
        if (sop_txn_commit(tx) != SOP_OK)
            break;
        acked++;
        if (t == T_MULTI && i == 40 && sop_db_checkpoint(db) != SOP_OK)
            break;
    }
    sop_db__crash_close(db);
    return acked;
}

/* ---- the newest segment ------------------------------------------------------ */

typedef struct rec {
    uint64_t off, len; /* len: header + payload + padding */
    uint32_t payload;
    uint8_t type;
} rec;

typedef struct seginfo {
    char path[640];
    uint64_t size;
    rec r[MAX_RECORDS];
    int n;
} seginfo;

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int newest_segment(const char *dir, seginfo *si)
{
    char segdir[512];
    snprintf(segdir, sizeof segdir, "%.500s/seg", dir);
    DIR *d = opendir(segdir);
    if (!d)
        return -1;
    char best[80] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".seg") && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%.64s", e->d_name);
    closedir(d);
    if (!best[0])
        return -1;
    snprintf(si->path, sizeof si->path, "%s/%s", segdir, best);
    FILE *f = fopen(si->path, "rb");
    if (!f)
        return -1;
    static uint8_t buf[4u << 20];
    si->size = fread(buf, 1, sizeof buf, f);
    fclose(f);
    si->n = 0;
    for (uint64_t off = 0; off + REC_HDR <= si->size && si->n < MAX_RECORDS;) {
        if (rd32(buf + off) != REC_MAGIC)
            break;
        uint32_t pl = rd32(buf + off + 8);
        uint64_t len = (REC_HDR + (uint64_t)pl + 7) & ~7ull;
        if (off + len > si->size)
            break;
        si->r[si->n++] = (rec){off, len, pl, buf[off + 4]};
        off += len;
    }
    return si->n >= 3 ? 0 : -1;
}

/* ---- damage -------------------------------------------------------------------- */

/* D_FIFO_META, D_DEVZERO_META: the same for FORMAT (off 0) or the newest
 * MANIFEST (off 1) - issue 10 defect 5: open blocked forever on a FIFO. */
typedef enum dkind {
    D_FLIP,
    D_ZERO,
    D_TRUNC,
    D_DELETE,
    D_FIFO,
    D_DEVZERO,
    D_FIFO_META,
    D_DEVZERO_META
} dkind;

typedef struct damage {
    dkind kind;
    uint64_t off, len; /* flip: byte off, bit len; zero: range; trunc: new size */
    char label[96];
} damage;

/* The path of FORMAT or of the newest MANIFEST-* next to si's segment. */
static int meta_path(char *out, size_t cap, const seginfo *si, int manifest)
{
    char dir[640];
    snprintf(dir, sizeof dir, "%s", si->path);
    char *slash = strstr(dir, "/seg/");
    if (!slash)
        return -1;
    *slash = 0;
    if (!manifest)
        return snprintf(out, cap, "%s/FORMAT", dir) < (int)cap ? 0 : -1;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char best[80] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "MANIFEST-", 9) == 0 && strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%.64s", e->d_name);
    closedir(d);
    return best[0] && snprintf(out, cap, "%s/%s", dir, best) < (int)cap ? 0 : -1;
}

static int apply(const seginfo *si, const damage *d)
{
    char meta[720];
    switch (d->kind) {
    case D_FIFO_META:
        return meta_path(meta, sizeof meta, si, (int)d->off) || unlink(meta) || mkfifo(meta, 0600)
                   ? -1
                   : 0;
    case D_DEVZERO_META:
        return meta_path(meta, sizeof meta, si, (int)d->off) || unlink(meta) ||
                       symlink("/dev/zero", meta)
                   ? -1
                   : 0;
    case D_FLIP:
    case D_ZERO: {
        int fd = open(si->path, O_RDWR);
        if (fd < 0)
            return -1;
        uint8_t b[4096] = {0};
        int ok;
        if (d->kind == D_FLIP) {
            ok = pread(fd, b, 1, (off_t)d->off) == 1;
            b[0] ^= (uint8_t)(1u << d->len);
            ok = ok && pwrite(fd, b, 1, (off_t)d->off) == 1;
        } else {
            ok = 1;
            for (uint64_t o = d->off; o < d->off + d->len && ok; o += sizeof b) {
                size_t n =
                    d->off + d->len - o < sizeof b ? (size_t)(d->off + d->len - o) : sizeof b;
                ok = pwrite(fd, b, n, (off_t)o) == (ssize_t)n;
            }
        }
        close(fd);
        return ok ? 0 : -1;
    }
    case D_TRUNC:
        return truncate(si->path, (off_t)d->off);
    case D_DELETE:
        return unlink(si->path);
    case D_FIFO:
        return unlink(si->path) || mkfifo(si->path, 0600) ? -1 : 0;
    case D_DEVZERO:
        return unlink(si->path) || symlink("/dev/zero", si->path) ? -1 : 0;
    }
    return -1;
}

/* ---- the oracle, in a child ------------------------------------------------------ */

typedef struct outcome {
    int open_rc;
    int bad;     /* 1: a property failed (message in msg) */
    int last_ok; /* commit COMMITS-1 present */
    char msg[400];
} outcome;

/* Verify the open database: every commit < need present, the last one
 * present or (if may_miss_last) absent, nothing else, check clean. */
static int verify(sop_db *db, tmpl t, int may_miss_last, int extra, outcome *out)
{
    static uint8_t want[32000];
    sop_txn *tx;
    sop_store *s;
    sop_val v;
    char kb[16];
    int rc = sop_txn_begin(&tx, db, SOP_TXN_READONLY);
    if (rc == SOP_OK && (rc = sop_store_open(&s, tx, "n", 0, NULL)) != SOP_OK)
        sop_txn_abort(tx);
    if (rc == SOP_NOTFOUND) {
        snprintf(out->msg, sizeof out->msg,
                 "open returned SOP_OK without the store: all %d acknowledged commits missing",
                 COMMITS);
        return -1;
    }
    if (rc) {
        snprintf(out->msg, sizeof out->msg, "store: %s: %s", sop_strerror(rc), sop_errmsg());
        return -1;
    }
    uint64_t present = 0, missing = 0, n = 0;
    int first_missing = -1;
    for (int i = 0; i < COMMITS; i++) {
        snprintf(kb, sizeof kb, "c%03d", i);
        sop_val k = {kb, strlen(kb)};
        rc = sop_get(&v, tx, s, &k);
        if (rc == SOP_NOTFOUND) {
            if (!(may_miss_last && i == COMMITS - 1)) {
                missing++;
                if (first_missing < 0)
                    first_missing = i;
            }
            continue;
        }
        if (rc) {
            snprintf(out->msg, sizeof out->msg, "get %s: %s: %s", kb, sop_strerror(rc),
                     sop_errmsg());
            sop_txn_abort(tx);
            return -1;
        }
        size_t len = value_of(want, t, i);
        if (v.len != len || memcmp(v.data, want, len) != 0) {
            snprintf(out->msg, sizeof out->msg, "%s: wrong value (%zu bytes)", kb, v.len);
            sop_txn_abort(tx);
            return -1;
        }
        present++;
        out->last_ok = i == COMMITS - 1;
    }
    if (extra) {
        sop_val k = {"extra", 5};
        if ((rc = sop_get(&v, tx, s, &k)) != SOP_OK) {
            snprintf(out->msg, sizeof out->msg, "extra commit: %s", sop_strerror(rc));
            sop_txn_abort(tx);
            return -1;
        }
        present++;
    }
    rc = sop_count(&n, tx, s);
    sop_txn_abort(tx);
    if (missing) {
        snprintf(out->msg, sizeof out->msg,
                 "open returned SOP_OK but %" PRIu64 " of %d acknowledged commits are missing "
                 "(first c%03d)",
                 missing, COMMITS, first_missing);
        return -1;
    }
    if (rc || n != present) {
        snprintf(out->msg, sizeof out->msg, "count %" PRIu64 " (%s), %" PRIu64 " present", n,
                 sop_strerror(rc), present);
        return -1;
    }
    uint64_t findings = 0;
    rc = sop_db_check(&findings, db, print_finding, NULL, NULL);
    if (rc || findings) {
        snprintf(out->msg, sizeof out->msg, "sop_db_check: %s, %" PRIu64 " finding(s)",
                 sop_strerror(rc), findings);
        return -1;
    }
    return 0;
}

static void child_case(const char *dir, tmpl t, int may_miss_last, outcome *out)
{
    sop_db *db;
    sop_db_options o = opts();
    out->open_rc = sop_db_open(&db, dir, &o);
    if (out->open_rc == SOP_CORRUPT || out->open_rc == SOP_IOERR || out->open_rc == SOP_INVAL)
        return; /* the damage was reported */
    if (out->open_rc) {
        out->bad = 1;
        snprintf(out->msg, sizeof out->msg, "open: %s: %s", sop_strerror(out->open_rc),
                 sop_errmsg());
        return;
    }
    if (verify(db, t, may_miss_last, 0, out) != 0) {
        out->bad = 1;
        sop_db_close(db);
        return;
    }
    sop_txn *tx;
    sop_store *s;
    int rc;
    if ((rc = sop_txn_begin(&tx, db, 0)) || (rc = sop_store_open(&s, tx, "n", 0, NULL)) ||
        (rc = put_s(tx, s, "extra", "after the damage")) || (rc = sop_txn_commit(tx)) ||
        (rc = sop_db_close(db)) || (rc = sop_db_open(&db, dir, &o))) {
        out->bad = 1;
        snprintf(out->msg, sizeof out->msg, "use after open: %s: %s", sop_strerror(rc),
                 sop_errmsg());
        return;
    }
    if (verify(db, t, may_miss_last, 1, out) != 0)
        out->bad = 1;
    if ((rc = sop_db_close(db)) && !out->bad) {
        out->bad = 1;
        snprintf(out->msg, sizeof out->msg, "close: %s", sop_strerror(rc));
    }
}

typedef struct totals {
    uint64_t cases, failures, injected, acked, reported, intact;
} totals;

static void run_case(totals *tot, const char *tdir, tmpl t, int acked, const damage *d, int relaxed)
{
    char dir[700], cmd[1600];
    snprintf(dir, sizeof dir, "%s/case", test_dir());
    test_rm_rf(dir);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", tdir, dir);
    tot->cases++;
    seginfo *si = malloc(sizeof *si);
    if (!si || system(cmd) != 0 || newest_segment(dir, si) != 0 || apply(si, d) != 0) {
        fprintf(stderr, "newest %s %s: could not set the case up\n", tmpl_names[t], d->label);
        tot->failures++;
        free(si);
        return;
    }
    free(si);
    tot->injected++;
    tot->acked += (uint64_t)acked;
    int p[2];
    if (pipe(p) != 0) {
        tot->failures++;
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        outcome out;
        memset(&out, 0, sizeof out);
        close(p[0]);
        alarm(OPEN_ALARM);
        child_case(dir, t, relaxed, &out);
        if (write(p[1], &out, sizeof out) != sizeof out)
            _exit(5);
        _exit(0);
    }
    close(p[1]);
    outcome out;
    memset(&out, 0, sizeof out);
    ssize_t got = pid > 0 ? read(p[0], &out, sizeof out) : -1;
    close(p[0]);
    int st = 0;
    if (pid > 0)
        waitpid(pid, &st, 0);
    const char *why = NULL;
    char buf[512];
    if (pid < 0)
        why = "fork failed";
    else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        why = "open hung (killed by the alarm)";
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "the child died with signal %d", WTERMSIG(st)), why = buf;
    else if (got != (ssize_t)sizeof out)
        why = "the child reported nothing";
    else if (out.bad)
        why = out.msg;
    if (why) {
        tot->failures++;
        fprintf(stderr, "FAILED newest %s %s%s: %s\n", tmpl_names[t], d->label,
                relaxed ? " (tail, relaxed)" : "", why);
        return;
    }
    if (out.open_rc)
        tot->reported++;
    else
        tot->intact++;
    if (getenv("SOP_CRASH_TRACE"))
        fprintf(stderr, "ok newest %s %s: %s\n", tmpl_names[t], d->label,
                out.open_rc ? sop_strerror(out.open_rc) : "all present");
}

static damage dmg(dkind k, uint64_t off, uint64_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static damage dmg(dkind k, uint64_t off, uint64_t len, const char *fmt, ...)
{
    damage d = {k, off, len, ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d.label, sizeof d.label, fmt, ap);
    va_end(ap);
    return d;
}

/* Cases for one template; si describes its (undamaged) newest segment. */
/* Cases for one template; @p tail: only those at the tail (the last
 * commit's records, the zeros after them), else all the others. */
static void template_cases(totals *tot, const char *tdir, tmpl t, int acked, const seginfo *si,
                           int tail, int random_cases)
{
    const rec *r = si->r;
    int n = si->n, mid = n / 2, last = n - 1;
    /* The last commit's records (its value blobs, then its TXN record): damage
     * or a cut there looks exactly like a torn append of that commit. */
    int lastc = last;
    while (lastc > 1 && r[lastc - 1].type != 4)
        lastc--;
    uint64_t end = r[last].off + r[last].len; /* zeros ahead of the tail may follow */
    damage d;
    if (tail) {
        /* the last commit may go (relaxed), nothing before it */
        d = dmg(D_FLIP, r[last].off + REC_HDR + r[last].payload / 2, 2, "last record payload");
        run_case(tot, tdir, t, acked, &d, 1);
        d = dmg(D_FLIP, r[last].off + 13, 0, "last record crc");
        run_case(tot, tdir, t, acked, &d, 1);
        d = dmg(D_TRUNC, r[last].off + r[last].len / 2, 0, "truncated inside the last record");
        run_case(tot, tdir, t, acked, &d, 1);
        d = dmg(D_TRUNC, r[lastc].off + 5, 0, "truncated inside the last commit's first record");
        run_case(tot, tdir, t, acked, &d, 1);
        d = dmg(D_TRUNC, end, 0, "truncated at the end of the last record");
        run_case(tot, tdir, t, acked, &d, 0);
        if (end + 8 <= si->size) {
            d = dmg(D_FLIP, end + 4, 5, "the zeros ahead of the tail");
            run_case(tot, tdir, t, acked, &d, 0);
        }
        return;
    }
    /* segment header record: every header field and its payload */
    static const struct {
        const char *name;
        uint64_t at;
    } fields[] = {{"magic", 1},  {"type", 4}, {"version", 5}, {"zero", 6},
                  {"length", 8}, {"crc", 12}, {"lsn", 16}};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        d = dmg(D_FLIP, r[0].off + fields[f].at, 0, "segment header record: %s", fields[f].name);
        run_case(tot, tdir, t, acked, &d, 0);
    }
    d = dmg(D_FLIP, r[0].off + REC_HDR + 3, 2, "segment header payload (uuid)");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_FLIP, r[0].off + REC_HDR + 16, 0, "segment header payload (segment id)");
    run_case(tot, tdir, t, acked, &d, 0);
    /* a middle record (valid records follow it) */
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        d = dmg(D_FLIP, r[mid].off + fields[f].at, 3, "record %d/%d header: %s", mid, n,
                fields[f].name);
        run_case(tot, tdir, t, acked, &d, 0);
    }
    d = dmg(D_FLIP, r[mid].off + REC_HDR + r[mid].payload / 2, 6, "record %d/%d payload middle",
            mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_FLIP, r[mid].off + REC_HDR, 0, "record %d/%d payload first byte", mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    for (int i = 1; i < last; i++)
        if (REC_HDR + r[i].payload < r[i].len) {
            d = dmg(D_FLIP, r[i].off + REC_HDR + r[i].payload, 1, "record %d/%d padding", i, n);
            run_case(tot, tdir, t, acked, &d, 0);
            break;
        }
    /* the first record after the header, and the one before the last */
    d = dmg(D_FLIP, r[1].off + REC_HDR + r[1].payload / 2, 4, "record 1/%d payload", n);
    run_case(tot, tdir, t, acked, &d, 0);
    /* When the next to last record is the last commit's value blob, the
     * last commit's TXN record vouches only for the bytes before that blob
     * (its mark: what was durable when it was appended, and the blob was
     * not yet): a power cut can tear the blob and keep the TXN record, so
     * this is the tail class, like the other damage to the last commit. */
    d = dmg(D_FLIP, r[last - 1].off + 9, 1, "record %d/%d (next to last) length", last - 1, n);
    run_case(tot, tdir, t, acked, &d, last - 1 >= lastc);
    /* The record before the last commit, its length grown so that its
     * (bogus) extent covers every record after it: the records that vouch
     * for it lie inside that extent. */
    for (int b = 0; b < 32; b++) {
        uint64_t pl = r[lastc - 1].payload ^ (1ull << b);
        uint64_t ext = r[lastc - 1].off + ((REC_HDR + pl + 7) & ~7ull);
        if (pl > r[lastc - 1].payload && ext > end && ext <= si->size) {
            d = dmg(D_FLIP, r[lastc - 1].off + 8 + (uint64_t)b / 8, (uint64_t)b % 8,
                    "record %d/%d length grown past the last record", lastc - 1, n);
            run_case(tot, tdir, t, acked, &d, 0);
            break;
        }
    }
    /* zeroed ranges, truncations */
    d = dmg(D_ZERO, r[mid].off, r[mid].len, "record %d/%d zeroed", mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_ZERO, r[mid].off + 8, r[mid + 1].off + 16 - r[mid].off - 8,
            "zeroed from record %d/%d into the next", mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_ZERO, 0, r[1].off, "segment header zeroed");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_TRUNC, r[mid].off + 12, 0, "truncated inside record %d/%d", mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_TRUNC, r[mid].off, 0, "truncated at record %d/%d (a boundary)", mid, n);
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_TRUNC, 0, 0, "truncated to 0 bytes");
    run_case(tot, tdir, t, acked, &d, 0);
    /* the file itself */
    d = dmg(D_DELETE, 0, 0, "deleted");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_FIFO, 0, 0, "replaced by a FIFO");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_DEVZERO, 0, 0, "replaced by a symlink to /dev/zero");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_FIFO_META, 0, 0, "FORMAT replaced by a FIFO");
    run_case(tot, tdir, t, acked, &d, 0);
    d = dmg(D_DEVZERO_META, 0, 0, "FORMAT replaced by a symlink to /dev/zero");
    run_case(tot, tdir, t, acked, &d, 0);
    if (t == T_MULTI) { /* the small template has no checkpoint */
        d = dmg(D_FIFO_META, 1, 0, "MANIFEST replaced by a FIFO");
        run_case(tot, tdir, t, acked, &d, 0);
        d = dmg(D_DEVZERO_META, 1, 0, "MANIFEST replaced by a symlink to /dev/zero");
        run_case(tot, tdir, t, acked, &d, 0);
    }
    /* random damage anywhere in the records */
    uint64_t h = mix(test_seed * 131 + (uint64_t)t);
    for (int i = 0; i < random_cases; i++) {
        h = mix(h);
        uint64_t pos = h % end;
        int in_last = pos >= r[lastc].off;
        switch ((h >> 40) % 4) {
        case 0:
        case 1:
            d = dmg(D_FLIP, pos, (h >> 50) & 7, "random flip at %" PRIu64 " bit %" PRIu64, pos,
                    (h >> 50) & 7);
            break;
        case 2: {
            uint64_t len = 1 + (h >> 48) % 600;
            if (pos + len > end)
                len = end - pos;
            in_last = pos + len > r[lastc].off;
            d = dmg(D_ZERO, pos, len, "random zeroing of %" PRIu64 " bytes at %" PRIu64, len, pos);
            break;
        }
        default:
            d = dmg(D_TRUNC, pos, 0, "random truncation to %" PRIu64 " bytes", pos);
            break;
        }
        run_case(tot, tdir, t, acked, &d, in_last);
    }
}

static void campaign(const char *name, int tail, int random_cases)
{
    totals tot;
    memset(&tot, 0, sizeof tot);
    for (int t = 0; t < T_COUNT; t++) {
        char tdir[600];
        snprintf(tdir, sizeof tdir, "%s/template-%s", test_dir(), tmpl_names[t]);
        int acked = build(tdir, (tmpl)t);
        CHECK_EQ_U64(acked, COMMITS);
        static seginfo si;
        CHECK(newest_segment(tdir, &si) == 0);
        /* the undamaged template must open with everything (the oracle's control) */
        damage none = dmg(D_ZERO, 0, 0, "no damage (control)");
        uint64_t before = tot.failures;
        run_case(&tot, tdir, (tmpl)t, acked, &none, 0);
        CHECK(tot.failures == before);
        tot.injected--; /* the control injects nothing */
        template_cases(&tot, tdir, (tmpl)t, acked, &si, tail, random_cases);
    }
    printf("campaign %s: cases %" PRIu64 " failures %" PRIu64 " acked %" PRIu64 " (%" PRIu64
           " damaged, %" PRIu64 " reported by open, %" PRIu64 " opened intact)\n",
           name, tot.cases, tot.failures, tot.acked, tot.injected, tot.reported, tot.intact);
    CHECK(tot.injected > 0);
    CHECK(tot.failures == 0);
}

/* A torn-looking tail: the last commit may be lost, nothing before it. */
TEST(test_newest__torn_tail_and_control)
{
    campaign("newest-tail", 1, 0);
}

/* Everything else: reported, or nothing lost. */
TEST(test_newest__damaged_newest_segment)
{
    campaign("newest", 0, getenv("SOP_NEWEST_RANDOM") ? atoi(getenv("SOP_NEWEST_RANDOM")) : 24);
}

TEST_MAIN(T(test_newest__torn_tail_and_control), T(test_newest__damaged_newest_segment))
