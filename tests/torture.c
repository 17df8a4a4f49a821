/*
 * torture.c - the driver of `make torture` (tests/torture.mk): long runs of
 * the campaigns whose short versions run in `make test`, one summary line
 * per campaign.
 *
 *   powerloss  test_powerloss with SOP_POWERLOSS_CUTS=COUNT simulated power
 *              cuts (tests/vfs_crash.c), each verified against the model
 *   kill       test_crash with SOP_CRASH_KILLS, KILLS real SIGKILLs in chunks
 *              (see run_kills)
 *   fault      test_fault with SOP_FAULT_SEEDS=LIFECYCLES: the fail-the-Nth-
 *              VFS-call sweep over that many lifecycles
 *   alloc      test_alloc with SOP_ALLOC_SEEDS=LIFECYCLES: the same with
 *              allocations
 *   blobkill   test_blobcrash sigkill: writer threads with value blobs and a
 *              checkpoint thread, KILLS/2 SIGKILLs, used on after recovery
 *   blobpower  test_blobcrash power: the same under COUNT/20 power cuts
 *   2pc        test_2pc: bank and list-append histories with prepare /
 *              commit / rollback, COUNT/500 crash rounds; the 2PC shapes and
 *              the recovered prepared commit under a 1 MiB cache
 *   newest     test_newest: damage to the newest segment of a crashed
 *              database, every position class plus COUNT/20 random cases
 *              per template
 * (blobkill, blobpower and 2pc run in chunks like kill: see run_chunked.)
 *
 * Each campaign is a child process (a crash in one is reported, the others
 * still run) given SOP_SEED=SEED; its output (stdout and stderr, in order)
 * is echoed except "ok" lines. The summary line reads:
 *
 *   torture <name>: cases N, failures F, acknowledged commits checked A,
 *   S s (seed X)
 *
 * where failures must be 0: every failed case counts, none is excused. The
 * exit status is 0 only if every campaign ran to its summary with 0
 * failures.
 *
 * Usage: torture --bin-dir DIR [--seed S] [--count N] [--kills K]
 *                [--lifecycles L]
 *                [--campaigns powerloss,kill,fault,alloc,blobkill,blobpower,2pc,newest]
 * Defaults: seed 1, count 10000, kills 1000, lifecycles 10.
 *
 * Every tests/ source that is not a test_ file is linked into every test binary, so the
 * driver is compiled only with -DSOP_TORTURE_MAIN (torture.mk does that).
 */
typedef int torture_translation_unit_is_not_empty;

#ifdef SOP_TORTURE_MAIN

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct campaign_result {
    int ran;     /* the summary line was seen */
    int exit_ok; /* exit status 0 */
    uint64_t cases, failures, acked;
    double secs;
    long failed_kill; /* test_crash: "kill N: verification failed", else -1 */
} campaign_result;

static double now_secs(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Run bin_dir/test_name with one env assignment and a test-name filter;
 * parse its output into *res. */
static void run_child(const char *bin_dir, const char *test_name, const char *filter,
                      const char *env_name, const char *env_value, uint64_t seed,
                      const char *campaign, campaign_result *res)
{
    char path[4096], seed_buf[32];
    int p[2];
    memset(res, 0, sizeof *res);
    res->failed_kill = -1;
    snprintf(path, sizeof path, "%s/%s", bin_dir, test_name);
    snprintf(seed_buf, sizeof seed_buf, "%" PRIu64, seed);
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "torture: %s: %s (build the tests first)\n", path, strerror(errno));
        return;
    }
    if (pipe(p) != 0) {
        perror("pipe");
        return;
    }
    double t0 = now_secs();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return;
    }
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 1);
        dup2(p[1], 2); /* one stream, in order */
        close(p[1]);
        setenv("SOP_SEED", seed_buf, 1);
        setenv(env_name, env_value, 1);
        execl(path, path, filter, (char *)NULL);
        perror(path);
        _exit(127);
    }
    close(p[1]);
    FILE *out = fdopen(p[0], "r");
    char line[4096];
    char want[64];
    snprintf(want, sizeof want, "campaign %s: ", campaign);
    while (out && fgets(line, sizeof line, out)) {
        unsigned long long c, f, a;
        unsigned kills;
        if (strncmp(line, "  ok ", 5) != 0) {
            printf("  | %s", line);
            fflush(stdout);
        }
        if (strncmp(line, want, strlen(want)) == 0 &&
            sscanf(line + strlen(want), "cases %llu failures %llu acked %llu", &c, &f, &a) == 3) {
            res->ran = 1;
            res->cases = c;
            res->failures = f;
            res->acked = a;
        }
        /* test_crash.c: "    %d kills, %llu acknowledged commits, all present" */
        if (strcmp(campaign, "kill") == 0 &&
            sscanf(line, " %u kills, %llu acknowledged commits, all present", &kills, &a) == 2) {
            res->ran = 1;
            res->cases = kills;
            res->acked = a;
        }
        const char *kp = strstr(line, ": kill ");
        long kn;
        if (strcmp(campaign, "kill") == 0 && kp &&
            sscanf(kp, ": kill %ld: verification failed", &kn) == 1)
            res->failed_kill = kn;
    }
    if (out)
        fclose(out);
    int st = 0;
    waitpid(pid, &st, 0);
    res->exit_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!res->exit_ok && res->failures == 0 && res->failed_kill < 0)
        res->failures = 1; /* a crash or a failed assertion outside the count */
    if (WIFSIGNALED(st))
        fprintf(stderr, "torture: %s died with signal %d\n", test_name, WTERMSIG(st));
    res->secs = now_secs() - t0;
}

/*
 * The kill campaign runs test_crash in chunks of KILL_CHUNK kills, each in a
 * fresh folder with its own seed, because test_crash stops at its first
 * failed verification. A chunk that stops early counts one failure (and the
 * kills up to the failed one as cases), and the campaign goes on with the
 * next chunk.
 */
#define KILL_CHUNK 100

static void run_kills(const char *bin_dir, uint64_t kills, uint64_t seed, campaign_result *res)
{
    campaign_result total;
    memset(&total, 0, sizeof total);
    total.ran = 1;
    total.exit_ok = 1;
    double t0 = now_secs();
    for (uint64_t chunk = 0; total.cases < kills; chunk++) {
        char value[32];
        campaign_result r;
        uint64_t n = kills - total.cases < KILL_CHUNK ? kills - total.cases : KILL_CHUNK;
        snprintf(value, sizeof value, "%" PRIu64, n);
        run_child(bin_dir, "test_crash", "test_crash__sigkill", "SOP_CRASH_KILLS", value,
                  seed * 1000 + chunk, "kill", &r);
        if (r.ran && r.exit_ok) {
            total.cases += r.cases;
            total.acked += r.acked;
            continue;
        }
        uint64_t done = r.failed_kill >= 0 ? (uint64_t)r.failed_kill + 1 : 1;
        total.cases += done;
        total.failures++;
        total.exit_ok = 0;
        printf("  | kill campaign: chunk failed (replay: SOP_SEED=%" PRIu64
               " SOP_CRASH_KILLS=%" PRIu64 " test_crash sigkill)\n",
               seed * 1000 + chunk, n);
    }
    total.secs = now_secs() - t0;
    *res = total;
}

/*
 * The same for the campaigns that stop at their first failed case
 * (blobkill, blobpower, 2pc): chunks of @p chunk cases, each in a fresh
 * folder with seed SEED*1000+chunk and its own summary line; a chunk that
 * stops early counts its failures and the cases it ran, and the campaign
 * goes on with the next chunk until @p total_cases cases ran.
 */
static void run_chunked(const char *bin_dir, const char *test_name, const char *filter,
                        const char *env_name, uint64_t total_cases, uint64_t chunk, uint64_t seed,
                        const char *campaign, campaign_result *res)
{
    campaign_result total;
    memset(&total, 0, sizeof total);
    total.ran = 1;
    total.exit_ok = 1;
    double t0 = now_secs();
    for (uint64_t c = 0; total.cases < total_cases; c++) {
        char value[32];
        campaign_result r;
        uint64_t n = total_cases - total.cases < chunk ? total_cases - total.cases : chunk;
        snprintf(value, sizeof value, "%" PRIu64, n);
        run_child(bin_dir, test_name, filter, env_name, value, seed * 1000 + c, campaign, &r);
        /* a chunk that stopped early counts the cases it ran (at least one) */
        total.cases += r.ran && r.cases ? (r.cases < n ? r.cases : n) : 1;
        total.acked += r.acked;
        if (r.ran && r.exit_ok && r.failures == 0)
            continue;
        total.failures += r.failures ? r.failures : 1;
        total.exit_ok = 0;
        printf("  | %s campaign: chunk failed (replay: SOP_SEED=%" PRIu64 " %s=%" PRIu64
               " %s %s)\n",
               campaign, seed * 1000 + c, env_name, n, test_name, filter);
    }
    total.secs = now_secs() - t0;
    *res = total;
}

static int wanted(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *bin_dir = NULL,
               *campaigns = "powerloss,kill,fault,alloc,blobkill,blobpower,2pc,newest";
    uint64_t seed = 1, count = 10000, kills = 1000, lifecycles = 10;
    int kills_given = 0, lifecycles_given = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--bin-dir"))
            bin_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--count"))
            count = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--kills"))
            kills = strtoull(argv[i + 1], NULL, 10), kills_given = 1;
        else if (!strcmp(argv[i], "--lifecycles"))
            lifecycles = strtoull(argv[i + 1], NULL, 10), lifecycles_given = 1;
        else if (!strcmp(argv[i], "--campaigns"))
            campaigns = argv[i + 1];
        else {
            fprintf(stderr, "torture: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!bin_dir) {
        fprintf(stderr, "usage: torture --bin-dir DIR [--seed S] [--count N] [--kills K] "
                        "[--lifecycles L] [--campaigns powerloss,kill,fault,alloc,blobkill,"
                        "blobpower,2pc,newest]\n");
        return 2;
    }
    /* COUNT scales the others unless they are given. */
    if (!kills_given)
        kills = count / 10 ? count / 10 : 1;
    if (!lifecycles_given)
        lifecycles = count / 1000 ? count / 1000 : 1;
    struct {
        const char *name, *bin, *filter, *env;
        uint64_t value, chunk; /* chunk: run_chunked with chunks of this many cases */
    } plan[] = {
        {"powerloss", "test_powerloss", "test_powerloss__cuts", "SOP_POWERLOSS_CUTS", count, 0},
        {"kill", "test_crash", "test_crash__sigkill", "SOP_CRASH_KILLS", kills, 0},
        {"fault", "test_fault", "test_fault__every", "SOP_FAULT_SEEDS", lifecycles, 0},
        {"alloc", "test_alloc", "test_alloc__every", "SOP_ALLOC_SEEDS", lifecycles, 0},
        {"blobkill", "test_blobcrash", "test_blobcrash__sigkill", "SOP_BLOBCRASH_KILLS",
         kills / 2 ? kills / 2 : 1, 50},
        {"blobpower", "test_blobcrash", "test_blobcrash__power", "SOP_BLOBCRASH_CUTS",
         count / 20 ? count / 20 : 1, 60},
        {"2pc", "test_2pc", "test_2pc__", "SOP_2PC_ROUNDS", count / 500 ? count / 500 : 1, 10},
        {"newest", "test_newest", "test_newest__", "SOP_NEWEST_RANDOM", count / 20 ? count / 20 : 1,
         0},
    };
    int bad = 0;
    char summary[8][256];
    int n_summary = 0;
    printf("torture: seed %" PRIu64 ", %" PRIu64 " power cuts, %" PRIu64 " kills, %" PRIu64
           " lifecycles per sweep, binaries in %s\n",
           seed, count, kills, lifecycles, bin_dir);
    fflush(stdout);
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        if (!wanted(campaigns, plan[i].name))
            continue;
        char value[32];
        campaign_result r;
        snprintf(value, sizeof value, "%" PRIu64, plan[i].value);
        printf("torture: running %s (%s=%s)\n", plan[i].name, plan[i].env, value);
        fflush(stdout);
        if (strcmp(plan[i].name, "kill") == 0) {
            run_kills(bin_dir, plan[i].value, seed, &r);
            if (r.failures)
                bad = 1;
        } else if (plan[i].chunk) {
            run_chunked(bin_dir, plan[i].bin, plan[i].filter, plan[i].env, plan[i].value,
                        plan[i].chunk, seed, plan[i].name, &r);
            if (r.failures)
                bad = 1;
        } else {
            run_child(bin_dir, plan[i].bin, plan[i].filter, plan[i].env, value, seed, plan[i].name,
                      &r);
            if (!r.ran || r.failures || !r.exit_ok)
                bad = 1;
        }
        snprintf(summary[n_summary++], sizeof summary[0],
                 "torture %s: cases %" PRIu64 ", failures %" PRIu64
                 ", acknowledged commits checked %" PRIu64 ", %.0f s (seed %" PRIu64 ")%s",
                 plan[i].name, r.cases, r.failures, r.acked, r.secs, seed,
                 r.ran ? "" : " - NO SUMMARY (crashed?)");
        printf("%s\n", summary[n_summary - 1]);
        fflush(stdout);
    }
    printf("\n");
    for (int i = 0; i < n_summary; i++)
        printf("%s\n", summary[i]);
    return bad;
}

#endif /* SOP_TORTURE_MAIN */
