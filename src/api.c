/*
 * api.c - every SOP_API entry point for transactions, stores, items and
 * cursors: check arguments and state, call down, keep the documented
 * transaction states (sop.h). Nothing here touches nodes or files
 * directly.
 */
#include "keys.h"
#include "txn.h"

#include <stddef.h>
#include <stdlib.h>

/* ---- transactions ---------------------------------------------------------- */

int sop_txn_begin(sop_txn **out, sop_db *db, unsigned flags)
{
    sop_err_clear();
    if (!out || !db)
        return sop_err(SOP_INVAL, "NULL argument");
    *out = NULL;
    if (flags & ~SOP_TXN_READONLY)
        return sop_err(SOP_INVAL, "unknown transaction flags 0x%x", flags);
    int rc = sop_db__check_panic(db);
    if (rc)
        return rc;
    return sop_done(sop_txn__begin(out, db, flags));
}

static int flush_cursor_reads(sop_txn *t)
{
    for (sop_cursor *c = t->cursors; c; c = c->next_in_txn) {
        int rc = sop_cursor__flush_reads(c);
        if (rc)
            return rc;
    }
    return SOP_OK;
}

int sop_txn_commit(sop_txn *t)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    SOP_TXN_CHECK(t, "sop_txn_commit");
    int rc;
    if (t->state == SOP_TXN_FAILED) {
        sop_txn__free(t);
        return sop_err(SOP_BADSTATE, "transaction had failed; it was rolled back");
    }
    if ((rc = sop_db__check_panic(t->db)) != SOP_OK) {
        sop_txn__free(t);
        return rc;
    }
    if (t->state == SOP_TXN_ACTIVE && t->deadline_ns != UINT64_MAX &&
        t->db->vfs->monotonic_ns(t->db->vfs) > t->deadline_ns) {
        /* Read-only ones too: the limit is the transaction's, and its end
         * tells the caller that it overran. */
        sop_txn__free(t);
        return sop_err(SOP_TIMEOUT, "transaction exceeded its time limit; not committed");
    }
    if (t->state == SOP_TXN_ACTIVE && (t->flags & SOP_TXN_READONLY)) {
        sop_txn__free(t);
        return sop_done(SOP_OK);
    }
    if (t->state == SOP_TXN_ACTIVE) {
        if ((rc = flush_cursor_reads(t)) != SOP_OK) {
            sop_txn__free(t);
            return rc;
        }
    }
    /* Every result ends the handle, SOP_BUSY too (sop.h): a retry loop
     * then needs no special case, and a prepared transaction whose phase
     * 2 failed stays prepared, to be resolved by id. */
    int prepared = t->state == SOP_TXN_PREPARED;
    rc = sop_txn__commit(t);
    if (!prepared) /* phase 2 maps a lost file itself: NOTFOUND = resolved by id */
        rc = sop_err_lost_file(rc);
    sop_txn__free(t);
    return sop_done(rc);
}

int sop_txn_abort(sop_txn *t)
{
    sop_err_clear();
    if (!t)
        return SOP_OK;
    SOP_TXN_CHECK(t, "sop_txn_abort");
    int rc = SOP_OK;
    if (t->state == SOP_TXN_PREPARED) {
        /* Phase 2 rollback writes a durable record, which can fail; the
         * transaction then stays prepared (sop_db_prepared_list). */
        rc = sop_db__check_panic(t->db);
        if (rc == SOP_OK)
            rc = sop_txn__resolve_prepared(t->db, t->id, 0);
    }
    sop_txn__free(t);
    return sop_done(rc);
}

int sop_txn_release(sop_txn *t)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    SOP_TXN_CHECK(t, "sop_txn_release");
    if (t->state != SOP_TXN_PREPARED)
        return sop_err(SOP_BADSTATE, "only a prepared transaction can be released; commit or "
                                     "abort this one");
    /* The prepared entry (db->prepared) is the transaction; the handle
     * only names it, so freeing the handle leaves it prepared. */
    sop_txn__free(t);
    return SOP_OK;
}

int sop_txn_prepare(sop_txn *t, const sop_val *xid)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    SOP_TXN_CHECK(t, "sop_txn_prepare");
    if (xid && (xid->len > SOP_MAX_XID_LEN || (xid->len && !xid->data)))
        return sop_err(SOP_INVAL, "xid must be 0..%d bytes", SOP_MAX_XID_LEN);
    if (t->flags & SOP_TXN_READONLY)
        return sop_err(SOP_READONLY, "read-only transactions cannot be prepared");
    int rc = sop_txn__check_usable(t, 1);
    if (rc)
        return rc;
    if ((rc = flush_cursor_reads(t)) != SOP_OK)
        return sop_txn__fail(t, rc);
    rc = sop_err_lost_file(sop_txn__prepare(t, xid));
    if (rc == SOP_CONFLICT)
        sop_txn__set_state(t, SOP_TXN_FAILED);
    else if (rc != SOP_BUSY)
        sop_txn__fail(t, rc);
    return sop_done(rc);
}

uint64_t sop_txn_id(const sop_txn *t)
{
    if (t)
        SOP_TXN_CHECK(t, "sop_txn_id");
    return t ? t->id : 0;
}

int sop_db_prepared_list(sop_prepared_info *out, size_t cap, size_t *count_out, sop_db *db)
{
    sop_err_clear();
    if (!db || !count_out || (cap && !out))
        return sop_err(SOP_INVAL, "NULL argument");
    size_t n = 0;
    sop_mutex_lock(&db->commit_mu);
    for (sop_prepared *p = db->prepared; p; p = p->next) {
        if (n < cap)
            out[n] = p->info;
        n++;
    }
    sop_mutex_unlock(&db->commit_mu);
    *count_out = n;
    return sop_done(SOP_OK);
}

int sop_db_prepared_commit(sop_db *db, uint64_t id)
{
    sop_err_clear();
    if (!db)
        return sop_err(SOP_INVAL, "db is NULL");
    int rc = sop_db__check_panic(db);
    return rc ? rc : sop_done(sop_txn__resolve_prepared(db, id, 1));
}

int sop_db_prepared_rollback(sop_db *db, uint64_t id)
{
    sop_err_clear();
    if (!db)
        return sop_err(SOP_INVAL, "db is NULL");
    int rc = sop_db__check_panic(db);
    return rc ? rc : sop_done(sop_txn__resolve_prepared(db, id, 0));
}

/* ---- versioned structs the library fills ----------------------------------------- */

/* Bytes of a struct libsop fills that version @p v of it has; 0 for an
 * unknown version. Fields are only appended (sop.h), so an older version
 * is a prefix of the current struct. */
static size_t db_stat_size(uint32_t v)
{
    if (v == 1)
        return offsetof(sop_db_stat_info, active_txns);
    return v == SOP_DB_STAT_VERSION ? sizeof(sop_db_stat_info) : 0;
}

static size_t store_info_size(uint32_t v)
{
    return v == SOP_STORE_INFO_VERSION ? sizeof(sop_store_info) : 0;
}

static size_t store_stat_size(uint32_t v)
{
    return v == SOP_STORE_STAT_VERSION ? sizeof(sop_store_stat_info) : 0;
}

/* Copy the first @p n bytes of the full struct @p full to the caller's
 * @p out, keeping the caller's version field (the first member). */
static void copy_versioned(void *out, const void *full, size_t n)
{
    uint32_t v;
    memcpy(&v, out, sizeof v);
    memcpy(out, full, n);
    memcpy(out, &v, sizeof v);
}

int sop_db_stat(sop_db_stat_info *out, sop_db *db)
{
    sop_err_clear();
    if (!out || !db)
        return sop_err(SOP_INVAL, "NULL argument");
    size_t n = db_stat_size(out->version);
    if (!n)
        return sop_err(SOP_INVAL, "unknown sop_db_stat_info version %u", out->version);
    sop_db_stat_info full;
    int rc = sop_db__stat(&full, db);
    if (rc)
        return rc;
    sop_mutex_lock(&db->snap_mu);
    full.active_txns = db->active_count;
    sop_mutex_unlock(&db->snap_mu);
    copy_versioned(out, &full, n);
    return sop_done(SOP_OK);
}

/* ---- stores ------------------------------------------------------------------ */

/* Bytes of sop_store_options a caller of @p version has; 0 if unknown
 * (see db.c db_options_size: only that prefix may be read). */
static size_t store_options_size(uint32_t version)
{
    _Static_assert(SOP_STORE_OPTIONS_VERSION == 1, "a new version needs its size here");
    return version == 1 ? offsetof(sop_store_options, key_spec_len) + sizeof(size_t) : 0;
}

int sop_store_options_init(sop_store_options *opts, uint32_t version)
{
    size_t n = store_options_size(version);
    if (!opts || n == 0)
        return sop_err(SOP_INVAL, "unknown sop_store_options version %u", version);
    memset(opts, 0, n);
    opts->version = version;
    return sop_done(SOP_OK);
}

/* *out = the caller's options @p in (NULL: the defaults), read up to the
 * end of in->version's fields; the rest keep their defaults. */
static int store_options_read(sop_store_options *out, const sop_store_options *in)
{
    memset(out, 0, sizeof *out);
    out->version = SOP_STORE_OPTIONS_VERSION;
    if (!in)
        return SOP_OK;
    size_t n = store_options_size(in->version);
    if (n == 0)
        return sop_err(SOP_INVAL, "unknown sop_store_options version %u", in->version);
    memcpy(out, in, n);
    return SOP_OK;
}

/* Offset of the first byte of p[0..n) that does not belong to a
 * well-formed UTF-8 sequence (RFC 3629: shortest form, no surrogates,
 * nothing above U+10FFFF), or n if there is none. */
static size_t utf8_bad_at(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF; /* the second byte's range */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong below U+0800 */
            else if (c == 0xED)
                hi = 0x9F; /* U+D800..U+DFFF are surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong below U+10000 */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i; /* C0, C1 (overlong), F5..FF, or a stray continuation byte */
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return i;
        i += len;
    }
    return n;
}

static int check_name(const char *name)
{
    if (!name)
        return sop_err(SOP_INVAL, "store name is NULL");
    size_t n = strlen(name);
    if (n == 0 || n > SOP_MAX_NAME_LEN)
        return sop_err(SOP_INVAL, "store name must be 1..%d bytes", SOP_MAX_NAME_LEN);
    size_t bad = utf8_bad_at((const uint8_t *)name, n);
    if (bad < n)
        return sop_err(SOP_INVAL, "store name is not valid UTF-8 (byte 0x%02x at offset %zu)",
                       (unsigned)(uint8_t)name[bad], bad);
    return SOP_OK;
}

/* The store named name as txn sees it (own pending creates and drops too). */
static sop_store *find_store(sop_txn *t, const char *name)
{
    return sop_db__store_for_txn(t->db, name, t);
}

static int check_opts_match(const sop_store *s, const sop_store_options *in)
{
    sop_store_options oo;
    const sop_store_options *o = &oo;
    if (!in)
        return SOP_OK;
    int rc = store_options_read(&oo, in);
    if (rc)
        return rc;
    if (o->flags && o->flags != s->flags)
        return sop_err(SOP_MISMATCH, "store '%s' exists with flags 0x%x, opened with 0x%x", s->name,
                       s->flags, o->flags);
    if (o->slot_length && o->slot_length != s->slot_length)
        return sop_err(SOP_MISMATCH, "store '%s' exists with slot_length %u, opened with %u",
                       s->name, s->slot_length, o->slot_length);
    if (o->max_inline_value && o->max_inline_value != s->max_inline)
        return sop_err(SOP_MISMATCH, "store '%s' exists with max_inline_value %u, opened with %u",
                       s->name, s->max_inline, o->max_inline_value);
    if (o->comparator && (!s->comparator || strcmp(o->comparator, s->comparator) != 0))
        return sop_err(SOP_MISMATCH, "store '%s' exists with comparator '%s', opened with '%s'",
                       s->name, s->comparator ? s->comparator : "(bytewise)", o->comparator);
    if (o->key_spec_len && (o->key_spec_len != s->key_spec_len ||
                            memcmp(o->key_spec, s->key_spec, s->key_spec_len) != 0))
        return sop_err(SOP_MISMATCH, "store '%s' exists with a different key specification",
                       s->name);
    return SOP_OK;
}

static int new_store(sop_store **out, sop_txn *t, const char *name, const sop_store_options *o)
{
    sop_db *db = t->db;
    sop_store_options d;
    int rc = store_options_read(&d, o);
    if (rc)
        return rc;
    o = &d;
    if (o->flags & ~(SOP_STORE_DUPLICATES | SOP_STORE_VALUES_SEPARATE))
        return sop_err(SOP_INVAL, "unknown store flags 0x%x", o->flags);
    uint32_t slot = o->slot_length ? o->slot_length : SOP_SLOT_LENGTH_DEFAULT;
    if (slot < SOP_SLOT_LENGTH_MIN || slot > SOP_SLOT_LENGTH_MAX)
        return sop_err(SOP_INVAL, "slot_length %u outside %d..%d", slot, SOP_SLOT_LENGTH_MIN,
                       SOP_SLOT_LENGTH_MAX);
    uint32_t maxin = o->max_inline_value ? o->max_inline_value : 1024;
    if (maxin > 65536)
        return sop_err(SOP_INVAL, "max_inline_value %u above 65536", maxin);
    if (o->key_spec_len > 4096 || (o->key_spec_len && !o->key_spec))
        return sop_err(SOP_INVAL, "key_spec must be 1..4096 bytes");
    if (o->key_spec_len && sop_keys__spec_check(o->key_spec, o->key_spec_len) != SOP_OK)
        return sop_err(SOP_INVAL,
                       "key_spec is not a valid index specification (sop_keyspec_encode)");
    if (o->key_spec_len && o->comparator)
        return sop_err(SOP_INVAL, "a store takes a key_spec or a comparator, not both");
    sop_store_def def = {
        .name = {name, strlen(name)},
        .comparator = {o->comparator, o->comparator ? strlen(o->comparator) : 0},
        .key_spec = {o->key_spec, o->key_spec_len},
        .flags = o->flags,
        .slot_length = slot,
        .max_inline = maxin,
        .next_seq = 1,
        .created_lsn = SOP_NEVER,
        .pending_owner = t,
    };
    sop_store *s;
    if ((rc = sop_store__new(&s, db, &def)) != SOP_OK)
        return rc;
    sop_ws *w = sop_txn__ws(t, s, 1);
    if (!w) {
        sop_store__free(s);
        return sop_err(SOP_NOMEM, "write set");
    }
    w->created = 1;
    sop_mutex_lock(&db->commit_mu); /* the catalog changes under both (D3) */
    sop_db__store_link(db, s);
    sop_mutex_unlock(&db->commit_mu);
    *out = s;
    return SOP_OK;
}

static int store_open_impl(sop_store **out, sop_txn *t, const char *name, unsigned flags,
                           const sop_store_options *opts)
{
    sop_err_clear();
    if (!out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    *out = NULL;
    int rc = check_name(name);
    if (rc)
        return rc;
    if (flags & ~SOP_STORE_CREATE)
        return sop_err(SOP_INVAL, "unknown store open flags 0x%x", flags);
    if ((rc = sop_txn__check_usable(t, 0)) != SOP_OK)
        return rc;
    sop_store *s = find_store(t, name);
    if (s) {
        if ((rc = check_opts_match(s, opts)) != SOP_OK)
            return rc;
        *out = s;
        return SOP_OK;
    }
    if (!(flags & SOP_STORE_CREATE))
        return sop_err(SOP_NOTFOUND, "no store '%s'", name);
    if (t->flags & SOP_TXN_READONLY)
        return sop_err(SOP_READONLY, "cannot create store '%s' in a read-only transaction", name);
    return new_store(out, t, name, opts);
}

int sop_store_open(sop_store **out, sop_txn *t, const char *name, unsigned flags,
                   const sop_store_options *opts)
{
    return sop_done(store_open_impl(out, t, name, flags, opts));
}

static int store_remove_impl(sop_txn *t, const char *name)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    int rc = check_name(name);
    if (rc)
        return rc;
    if ((rc = sop_txn__check_usable(t, 1)) != SOP_OK)
        return rc;
    sop_store *s = find_store(t, name);
    if (!s)
        return sop_err(SOP_NOTFOUND, "no store '%s'", name);
    sop_ws *w = sop_txn__ws(t, s, 1);
    if (!w)
        return sop_txn__fail(t, sop_err(SOP_NOMEM, "write set"));
    if (w->created) {
        /* Created and removed in this txn: it never existed. */
        w->created = 0;
        sop_ws__clear(w);
        atomic_store(&s->pending_owner, NULL);
        return SOP_OK;
    }
    w->dropped = 1;
    return SOP_OK;
}

int sop_store_remove(sop_txn *t, const char *name)
{
    return sop_done(store_remove_impl(t, name));
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int store_list_impl(char ***names_out, size_t *count_out, sop_txn *t)
{
    sop_err_clear();
    if (!names_out || !count_out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    *names_out = NULL;
    *count_out = 0;
    int rc = sop_txn__check_usable(t, 0);
    if (rc)
        return rc;
    size_t n = 0, cap = 8;
    char **names = sop_malloc(cap * sizeof *names);
    if (!names)
        return sop_err(SOP_NOMEM, "store list");
    /* Under cat_mu the list holds still (D3); a store is listed if txn sees
     * it, not removed by txn. One live store per name: no duplicates. */
    sop_mutex_lock(&t->db->cat_mu);
    for (sop_store *s = atomic_load(&t->db->stores); s; s = s->next) {
        if (!sop_store__visible(s, t->snap, t))
            continue;
        sop_ws *w = sop_txn__ws(t, s, 0);
        if (w && w->dropped)
            continue;
        if (n == cap) {
            char **nn = sop_realloc(names, (cap *= 2) * sizeof *names);
            if (!nn) {
                sop_mutex_unlock(&t->db->cat_mu);
                goto nomem;
            }
            names = nn;
        }
        if (!(names[n] = sop_strdup(s->name))) {
            sop_mutex_unlock(&t->db->cat_mu);
            goto nomem;
        }
        n++;
    }
    sop_mutex_unlock(&t->db->cat_mu);
    qsort(names, n, sizeof *names, cmp_names);
    *names_out = names;
    *count_out = n;
    return SOP_OK;
nomem:
    sop_store_list_free(names, n);
    return sop_err(SOP_NOMEM, "store list");
}

int sop_store_list(char ***names_out, size_t *count_out, sop_txn *t)
{
    return sop_done(store_list_impl(names_out, count_out, t));
}

void sop_store_list_free(char **names, size_t count)
{
    if (!names)
        return;
    for (size_t i = 0; i < count; i++)
        sop_free(names[i]);
    sop_free(names);
}

const char *sop_store_name(const sop_store *s)
{
    return s ? s->name : NULL;
}

/* Store usable by txn? */
static int check_store(sop_txn *t, sop_store *s)
{
    if (!s)
        return sop_err(SOP_INVAL, "store is NULL");
    if (s->db != t->db)
        return sop_err(SOP_INVAL, "store '%s' belongs to another database", s->name);
    if (!sop_store__visible(s, t->snap, t))
        return sop_err(SOP_BADSTATE, "store '%s' is not visible in this transaction", s->name);
    sop_ws *w = sop_txn__ws(t, s, 0);
    if (w && w->dropped)
        return sop_err(SOP_BADSTATE, "store '%s' was removed in this transaction", s->name);
    return SOP_OK;
}

/* ---- items ------------------------------------------------------------------ */

static int check_kv(const sop_val *key, const sop_val *value)
{
    if (!key || (key->len && !key->data))
        return sop_err(SOP_INVAL, "key is NULL");
    if (key->len == 0 || key->len > SOP_MAX_KEY_LEN)
        return sop_err(SOP_INVAL, "key length %zu outside 1..%d", key->len, SOP_MAX_KEY_LEN);
    if (value && (value->len > SOP_MAX_VALUE_LEN || (value->len && !value->data)))
        return sop_err(SOP_INVAL, "value length %zu above %u or NULL data", value->len,
                       SOP_MAX_VALUE_LEN);
    return SOP_OK;
}

static int is_dup(const sop_store *s)
{
    return (s->flags & SOP_STORE_DUPLICATES) != 0;
}

/*
 * Find the first item with key in txn's view (write set over snapshot).
 * *seq_out its seq; *val_out its value. SOP_NOTFOUND if none.
 */
static int view_first(sop_txn *t, sop_store *s, const sop_val *key, uint64_t *seq_out,
                      sop_leafval *val_out)
{
    sop_ws *w = sop_txn__ws(t, s, 0);
    int created_here = atomic_load(&s->created_lsn) > t->snap;
    if (!is_dup(s)) {
        if (w) {
            int exact;
            sop_ws_item *x = sop_ws__find(w, key, 0, &exact);
            if (exact) {
                if (x->op == SOP_OP_DEL)
                    return SOP_NOTFOUND;
                *seq_out = 0;
                *val_out = x->val;
                return SOP_OK;
            }
        }
        if (created_here)
            return SOP_NOTFOUND;
        return sop_btree__get(t->db, s, t->snap, key, 0, 0, NULL, seq_out, val_out);
    }
    /* duplicate store: use a merged cursor */
    sop_cursor c;
    memset(&c, 0, sizeof c);
    c.txn = t;
    c.store = s;
    int rc = sop_cursor__init_ext(&c);
    if (rc)
        return rc;
    sop_txn *owner = t;
    unsigned saved = owner->flags;
    owner->flags |= SOP_TXN_READONLY; /* no read-range for this internal probe */
    rc = sop_cursor__move(&c, SOP_SEEK, key);
    owner->flags = saved;
    if (rc == SOP_OK) {
        *seq_out = c.seq;
        *val_out = c.val;
    }
    sop_cursor__free_ext(&c);
    return rc;
}

enum { OP_ADD, OP_ADD_IF_ABSENT, OP_UPDATE, OP_UPSERT };

/* A put into the write set. A large value is written to the log now, so
 * "no such file" here is the folder gone under the handle, not a key. */
static int put_value(sop_txn *t, sop_store *s, const sop_val *key, uint64_t seq,
                     const sop_val *value)
{
    return sop_err_lost_file(sop_txn__ws_put(t, s, SOP_OP_PUT, key, seq, value));
}

static int write_op(sop_txn *t, sop_store *s, const sop_val *key, const sop_val *value, int kind)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    int rc = check_kv(key, value);
    if (rc)
        return rc;
    if (!value)
        return sop_err(SOP_INVAL, "value is NULL");
    if ((rc = sop_txn__check_usable(t, 1)) != SOP_OK || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    if (s->key_spec_len &&
        (rc = sop_keys__key_check(s->key_spec, s->key_spec_len, key->data, key->len, 0)) != SOP_OK)
        return rc == SOP_CORRUPT ? sop_err(SOP_INVAL,
                                           "key does not match store '%s' key "
                                           "specification: %s",
                                           s->name, sop_errmsg())
                                 : rc;
    uint64_t seq = 0;
    sop_leafval cur;
    if (kind == OP_UPSERT && !is_dup(s))
        return sop_txn__fail(t, put_value(t, s, key, 0, value));
    if (kind == OP_ADD && is_dup(s))
        return sop_txn__fail(t, put_value(t, s, key, t->next_prov_seq++, value));
    rc = view_first(t, s, key, &seq, &cur);
    if (rc != SOP_OK && rc != SOP_NOTFOUND)
        return sop_txn__fail(t, rc);
    int found = rc == SOP_OK;
    /* The existence check is a read (phantom-safe: absent keys too). */
    if ((rc = sop_txn__read_point(t, s, key)) != SOP_OK)
        return sop_txn__fail(t, rc);
    switch (kind) {
    case OP_ADD:
    case OP_ADD_IF_ABSENT:
        if (found)
            return sop_err(SOP_KEYEXIST, "key already exists in store '%s'", s->name);
        seq = is_dup(s) ? t->next_prov_seq++ : 0;
        break;
    case OP_UPDATE:
        if (!found)
            return sop_err(SOP_NOTFOUND, "key not found in store '%s'", s->name);
        break;
    case OP_UPSERT:
        if (!found)
            seq = t->next_prov_seq++;
        break;
    }
    return sop_txn__fail(t, put_value(t, s, key, seq, value));
}

int sop_add(sop_txn *t, sop_store *s, const sop_val *key, const sop_val *value)
{
    return sop_done(write_op(t, s, key, value, OP_ADD));
}
int sop_add_if_absent(sop_txn *t, sop_store *s, const sop_val *key, const sop_val *value)
{
    return sop_done(write_op(t, s, key, value, OP_ADD_IF_ABSENT));
}
int sop_update(sop_txn *t, sop_store *s, const sop_val *key, const sop_val *value)
{
    return sop_done(write_op(t, s, key, value, OP_UPDATE));
}
int sop_upsert(sop_txn *t, sop_store *s, const sop_val *key, const sop_val *value)
{
    return sop_done(write_op(t, s, key, value, OP_UPSERT));
}

static int remove_impl(sop_txn *t, sop_store *s, const sop_val *key)
{
    sop_err_clear();
    if (!t)
        return sop_err(SOP_INVAL, "txn is NULL");
    int rc = check_kv(key, NULL);
    if (rc)
        return rc;
    if ((rc = sop_txn__check_usable(t, 1)) != SOP_OK || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    if ((rc = sop_txn__read_point(t, s, key)) != SOP_OK)
        return sop_txn__fail(t, rc);
    int removed = 0;
    for (;;) {
        uint64_t seq;
        sop_leafval cur;
        rc = view_first(t, s, key, &seq, &cur);
        if (rc == SOP_NOTFOUND)
            break;
        if (rc)
            return sop_txn__fail(t, rc);
        if ((rc = sop_txn__ws_put(t, s, SOP_OP_DEL, key, seq, NULL)) != SOP_OK)
            return sop_txn__fail(t, rc);
        removed++;
        if (!is_dup(s))
            break;
    }
    return removed ? SOP_OK : sop_err(SOP_NOTFOUND, "key not found in store '%s'", s->name);
}

int sop_remove(sop_txn *t, sop_store *s, const sop_val *key)
{
    return sop_done(remove_impl(t, s, key));
}

static int get_impl(sop_val *value_out, sop_txn *t, sop_store *s, const sop_val *key)
{
    sop_err_clear();
    if (value_out) {
        value_out->data = NULL;
        value_out->len = 0;
    }
    if (!t || !value_out)
        return sop_err(SOP_INVAL, "NULL argument");
    int rc = check_kv(key, NULL);
    if (rc)
        return rc;
    if ((rc = sop_txn__check_usable(t, 0)) != SOP_OK || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    if (!(t->flags & SOP_TXN_READONLY) && (rc = sop_txn__read_point(t, s, key)) != SOP_OK)
        return sop_txn__fail(t, rc);
    uint64_t seq;
    sop_leafval v;
    rc = view_first(t, s, key, &seq, &v);
    if (rc == SOP_NOTFOUND)
        return SOP_NOTFOUND;
    if (rc)
        return sop_txn__fail(t, rc);
    if ((rc = sop_txn__value(value_out, t, &t->value_buf, &t->value_buf_cap, &v)) != SOP_OK)
        return sop_txn__fail(t, rc);
    return SOP_OK;
}

int sop_get(sop_val *value_out, sop_txn *t, sop_store *s, const sop_val *key)
{
    return sop_done(get_impl(value_out, t, s, key));
}

static int count_impl(uint64_t *count_out, sop_txn *t, sop_store *s)
{
    sop_err_clear();
    if (!count_out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    *count_out = 0;
    int rc = sop_txn__check_usable(t, 0);
    if (rc || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    int created_here = atomic_load(&s->created_lsn) > t->snap;
    /* Unsigned, added and removed apart, kept in [0, INT64_MAX] like the
     * stored counts (txn.c count_plus): a damaged count near INT64_MAX
     * must not overflow, nor one smaller than the removals wrap. */
    uint64_t n = created_here ? 0 : sop_store__count_at(s, t->snap);
    uint64_t added = 0, removed = 0;
    sop_ws *w = sop_txn__ws(t, s, 0);
    if (w) {
        for (sop_ws_item *x = w->head->next[0]; x; x = x->next[0]) {
            int in_tree = 0;
            if (!created_here && x->seq < SOP_PROVISIONAL_SEQ) {
                rc = sop_btree__get(t->db, s, t->snap, &x->key, x->seq, 0, NULL, NULL, NULL);
                if (rc != SOP_OK && rc != SOP_NOTFOUND)
                    return sop_txn__fail(t, rc);
                in_tree = rc == SOP_OK;
            }
            if (x->op == SOP_OP_PUT && !in_tree)
                added++;
            else if (x->op == SOP_OP_DEL && in_tree)
                removed++;
        }
    }
    if (!(t->flags & SOP_TXN_READONLY) &&
        (rc = sop_txn__read_range(t, s, 1, NULL, 1, NULL)) != SOP_OK)
        return sop_txn__fail(t, rc);
    if (n > INT64_MAX)
        n = INT64_MAX;
    n = added > INT64_MAX - n ? INT64_MAX : n + added;
    *count_out = n > removed ? n - removed : 0;
    return SOP_OK;
}

int sop_count(uint64_t *count_out, sop_txn *t, sop_store *s)
{
    return sop_done(count_impl(count_out, t, s));
}

static int store_info_get_impl(sop_store_info *out, sop_txn *t, sop_store *s)
{
    sop_err_clear();
    if (!out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    size_t n = store_info_size(out->version);
    if (!n)
        return sop_err(SOP_INVAL, "unknown sop_store_info version %u", out->version);
    sop_store_info full;
    memset(&full, 0, sizeof full);
    int rc = sop_count(&full.count, t, s);
    if (rc)
        return rc;
    full.options.version = SOP_STORE_OPTIONS_VERSION;
    full.options.flags = s->flags;
    full.options.slot_length = s->slot_length;
    full.options.max_inline_value = s->max_inline;
    full.options.comparator = s->comparator;
    full.options.key_spec = s->key_spec;
    full.options.key_spec_len = s->key_spec_len;
    full.id = s->id;
    copy_versioned(out, &full, n);
    return SOP_OK;
}

int sop_store_info_get(sop_store_info *out, sop_txn *t, sop_store *s)
{
    return sop_done(store_info_get_impl(out, t, s));
}

static int store_stat_impl(sop_store_stat_info *out, sop_txn *t, sop_store *s)
{
    sop_err_clear();
    if (!out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    size_t n = store_stat_size(out->version);
    if (!n)
        return sop_err(SOP_INVAL, "unknown sop_store_stat_info version %u", out->version);
    sop_store_stat_info full;
    memset(&full, 0, sizeof full);
    copy_versioned(out, &full, n); /* zeroed on error */
    int rc = sop_txn__check_usable(t, 0);
    if (rc || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    if (atomic_load(&s->created_lsn) > t->snap)
        return SOP_OK; /* created by this transaction: nothing committed yet */
    if ((rc = sop_btree__stat(&full, t->db, s, t->snap)) != SOP_OK)
        return sop_txn__fail(t, rc);
    copy_versioned(out, &full, n);
    return SOP_OK;
}

int sop_store_stat(sop_store_stat_info *out, sop_txn *t, sop_store *s)
{
    return sop_done(store_stat_impl(out, t, s));
}

/* ---- cursors ------------------------------------------------------------------ */

static int cursor_open_impl(sop_cursor **out, sop_txn *t, sop_store *s)
{
    sop_err_clear();
    if (!out || !t)
        return sop_err(SOP_INVAL, "NULL argument");
    *out = NULL;
    int rc = sop_txn__check_usable(t, 0);
    if (rc || (rc = check_store(t, s)) != SOP_OK)
        return rc;
    sop_cursor *c = sop_calloc(1, sizeof *c);
    if (!c)
        return sop_err(SOP_NOMEM, "cursor");
    c->txn = t;
    c->store = s;
    sop_tcur__init(&c->tc, t->db, s, t->snap);
    if ((rc = sop_cursor__init_ext(c)) != SOP_OK) {
        sop_free(c);
        return rc;
    }
    c->next_in_txn = t->cursors;
    if (t->cursors)
        t->cursors->prev_in_txn = c;
    t->cursors = c;
    *out = c;
    return SOP_OK;
}

int sop_cursor_open(sop_cursor **out, sop_txn *t, sop_store *s)
{
    return sop_done(cursor_open_impl(out, t, s));
}

void sop_cursor_close(sop_cursor *c)
{
    if (!c)
        return;
    if (c->txn) {
        sop_cursor__flush_reads(c);
        if (c->prev_in_txn)
            c->prev_in_txn->next_in_txn = c->next_in_txn;
        else
            c->txn->cursors = c->next_in_txn;
        if (c->next_in_txn)
            c->next_in_txn->prev_in_txn = c->prev_in_txn;
    }
    sop_cursor__free_ext(c);
    sop_free(c->value_buf);
    sop_free(c);
}

static int cursor_get_impl(sop_val *key_out, sop_val *value_out, sop_cursor *c, sop_cursor_op op,
                           const sop_val *key)
{
    sop_err_clear();
    if (key_out)
        key_out->data = NULL, key_out->len = 0;
    if (value_out)
        value_out->data = NULL, value_out->len = 0;
    if (!c)
        return sop_err(SOP_INVAL, "cursor is NULL");
    if (!c->txn)
        return sop_err(SOP_BADSTATE, "the cursor's transaction has ended");
    sop_txn *t = c->txn;
    int rc = sop_txn__check_usable(t, 0);
    if (rc || (rc = check_store(t, c->store)) != SOP_OK)
        return rc;
    if ((unsigned)op > SOP_PREV_DUP)
        return sop_err(SOP_INVAL, "unknown cursor op %d", (int)op);
    if ((op == SOP_SEEK || op == SOP_SEEK_GE) && (rc = check_kv(key, NULL)) != SOP_OK)
        return rc;
    rc = sop_cursor__move(c, op, key);
    if (rc == SOP_NOTFOUND || rc == SOP_INVAL)
        return rc;
    if (rc)
        return sop_txn__fail(t, rc);
    if (key_out)
        *key_out = c->key;
    if (value_out &&
        (rc = sop_txn__value(value_out, t, &c->value_buf, &c->value_buf_cap, &c->val)) != SOP_OK)
        return sop_txn__fail(t, rc);
    return SOP_OK;
}

int sop_cursor_get(sop_val *key_out, sop_val *value_out, sop_cursor *c, sop_cursor_op op,
                   const sop_val *key)
{
    return sop_done(cursor_get_impl(key_out, value_out, c, op, key));
}

static int cursor_set_range_impl(sop_cursor *c, const sop_val *lo, const sop_val *hi,
                                 unsigned flags)
{
    sop_err_clear();
    if (!c)
        return sop_err(SOP_INVAL, "cursor is NULL");
    if (flags & ~(SOP_RANGE_LO_EXCLUSIVE | SOP_RANGE_HI_EXCLUSIVE))
        return sop_err(SOP_INVAL, "unknown range flags 0x%x", flags);
    int rc;
    if ((lo && (rc = check_kv(lo, NULL)) != SOP_OK) || (hi && (rc = check_kv(hi, NULL)) != SOP_OK))
        return rc;
    if (!c->txn)
        return sop_err(SOP_BADSTATE, "the cursor's transaction has ended");
    if ((rc = sop_txn__check_usable(c->txn, 0)) != SOP_OK)
        return rc;
    return sop_cursor__set_range(c, lo, hi, flags);
}

int sop_cursor_set_range(sop_cursor *c, const sop_val *lo, const sop_val *hi, unsigned flags)
{
    return sop_done(cursor_set_range_impl(c, lo, hi, flags));
}

static int cursor_remove_impl(sop_cursor *c)
{
    sop_err_clear();
    if (!c)
        return sop_err(SOP_INVAL, "cursor is NULL");
    if (!c->txn)
        return sop_err(SOP_BADSTATE, "the cursor's transaction has ended");
    sop_txn *t = c->txn;
    int rc = sop_txn__check_usable(t, 1);
    if (rc || (rc = check_store(t, c->store)) != SOP_OK)
        return rc;
    if (!c->positioned)
        return sop_err(SOP_INVAL, "cursor is not positioned");
    return sop_txn__fail(t, sop_txn__ws_put(t, c->store, SOP_OP_DEL, &c->key, c->seq, NULL));
}

int sop_cursor_remove(sop_cursor *c)
{
    return sop_done(cursor_remove_impl(c));
}
