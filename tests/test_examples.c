/*
 * test_examples.c - run the example programs as a user would and check
 * what they print: the quickstart seed program twice, then a third program
 * reading both values back; the compound-key employees example (twice: its
 * upserts are idempotent). Also the store-level key-specification rules.
 */
#include <libgen.h>

#include "harness.h"
#include "tutil.h"

/* Run build/<variant>/examples/<prog> with args in dir; capture stdout. */
static int run_example(char *out, size_t cap, const char *dir, const char *prog, const char *arg)
{
    char self[600], cmd[2000];
    snprintf(self, sizeof self, "%s", test_argv0);
    char *bin_dir = dirname(self); /* .../tests */
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/../examples/%s' %s", dir, bin_dir[0] == '/' ? bin_dir : "",
             prog, arg ? arg : "");
    if (bin_dir[0] != '/') {
        char cwd[600];
        if (!getcwd(cwd, sizeof cwd))
            return -1;
        snprintf(cmd, sizeof cmd, "cd '%s' && '%s/%s/../examples/%s' %s", dir, cwd, bin_dir, prog,
                 arg ? arg : "");
    }
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    return pclose(p);
}

TEST(test_examples__quickstart_twice_then_read_back)
{
    char out[4096];
    CHECK(run_example(out, sizeof out, test_dir(), "quickstart", NULL) == 0);
    CHECK(strcmp(out, "System configuration persisted safely.\n") == 0);
    CHECK(run_example(out, sizeof out, test_dir(), "quickstart", NULL) == 0);
    CHECK(strcmp(out, "System configuration persisted safely.\n") == 0);
    CHECK(run_example(out, sizeof out, test_dir(), "readconfig", NULL) == 0);
    CHECK(strcmp(out, "max_connections = 10000\ntimeout_ms = 500\n") == 0);
}

static const char employees_expected[] =
    "all employees (region asc, department asc, id desc):\n"
    "  (region=\"APAC\", department=\"Sales\", id=5) -> Yukihiro\n"
    "  (region=\"EU\", department=\"Research\", id=3) -> Ada\n"
    "  (region=\"EU\", department=\"Sales\", id=9) -> Linus\n"
    "  (region=\"US\", department=\"Operations\", id=30) -> Margaret\n"
    "  (region=\"US\", department=\"Research\", id=12) -> Alan\n"
    "  (region=\"US\", department=\"Sales\", id=21) -> Barbara\n"
    "  (region=\"US\", department=\"Sales\", id=7) -> Grace\n"
    "  (region=\"US\", department=\"Sales\", id=2) -> Dennis\n"
    "region US:\n"
    "  (region=\"US\", department=\"Operations\", id=30) -> Margaret\n"
    "  (region=\"US\", department=\"Research\", id=12) -> Alan\n"
    "  (region=\"US\", department=\"Sales\", id=21) -> Barbara\n"
    "  (region=\"US\", department=\"Sales\", id=7) -> Grace\n"
    "  (region=\"US\", department=\"Sales\", id=2) -> Dennis\n"
    "region US, department Sales:\n"
    "  (region=\"US\", department=\"Sales\", id=21) -> Barbara\n"
    "  (region=\"US\", department=\"Sales\", id=7) -> Grace\n"
    "  (region=\"US\", department=\"Sales\", id=2) -> Dennis\n";

TEST(test_examples__employees_prefix_scan)
{
    char out[8192];
    CHECK(run_example(out, sizeof out, test_dir(), "employees", "db") == 0);
    CHECK(strcmp(out, employees_expected) == 0);
    CHECK(run_example(out, sizeof out, test_dir(), "employees", "db") == 0);
    CHECK(strcmp(out, employees_expected) == 0);
}

TEST(test_examples__key_spec_rules)
{
    sop_db *db;
    sop_txn *t;
    sop_store *s;
    sop_keyspec *spec, *other;
    uint8_t a[256], b[256], key[64];
    size_t alen, blen, klen;
    CHECK_OK(sop_keyspec_new(&spec));
    CHECK_OK(sop_keyspec_add(spec, "country", SOP_KEY_STRING, SOP_KEY_ASC));
    CHECK_OK(sop_keyspec_add(spec, "population", SOP_KEY_INT64, SOP_KEY_DESC));
    CHECK_OK(sop_keyspec_encode(a, sizeof a, &alen, spec));
    CHECK_OK(sop_keyspec_new(&other));
    CHECK_OK(sop_keyspec_add(other, "country", SOP_KEY_STRING, SOP_KEY_DESC));
    CHECK_OK(sop_keyspec_encode(b, sizeof b, &blen, other));
    CHECK_OK(sop_db_open(&db, test_dir(), NULL));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    sop_store_options o = SOP_STORE_OPTIONS_INIT;
    o.key_spec = a;
    o.key_spec_len = alen;
    CHECK_OK(sop_store_open(&s, t, "cities", SOP_STORE_CREATE, &o));
    sop_tuple tp;
    sop_tuple_start(&tp, key, sizeof key);
    sop_tuple_add_cstr(&tp, "NL", SOP_KEY_ASC);
    sop_tuple_add_int64(&tp, 900000, SOP_KEY_DESC);
    sop_val k;
    CHECK_OK(sop_tuple_finish(&k, &tp));
    klen = k.len;
    CHECK_OK(sop_upsert(t, s, &k, &(sop_val)S("Amsterdam")));
    /* a key that does not fit the spec is refused */
    CHECK_RC(SOP_INVAL, sop_upsert(t, s, &(sop_val)S("plain bytes"), &(sop_val)S("x")));
    CHECK_OK(sop_txn_commit(t));
    CHECK_OK(sop_txn_begin(&t, db, 0));
    o.key_spec = b;
    o.key_spec_len = blen;
    CHECK_RC(SOP_MISMATCH, sop_store_open(&s, t, "cities", 0, &o)); /* contradicting spec */
    o.key_spec = "garbage";
    o.key_spec_len = 7;
    CHECK_RC(SOP_INVAL, sop_store_open(&s, t, "new", SOP_STORE_CREATE, &o));
    CHECK_OK(sop_store_open(&s, t, "cities", 0, NULL));
    sop_store_info info = SOP_STORE_INFO_INIT;
    CHECK_OK(sop_store_info_get(&info, t, s));
    CHECK(info.options.key_spec_len == alen && memcmp(info.options.key_spec, a, alen) == 0);
    sop_val v;
    CHECK_OK(sop_get(&v, t, s, &(sop_val){key, klen}));
    CHECK_VAL(v, "Amsterdam");
    sop_txn_abort(t);
    CHECK_OK(sop_db_close(db));
    sop_keyspec_free(spec);
    sop_keyspec_free(other);
}

TEST_MAIN(T(test_examples__quickstart_twice_then_read_back), T(test_examples__employees_prefix_scan),
          T(test_examples__key_spec_rules))
