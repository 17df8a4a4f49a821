/*
 * standalone.c - run a libFuzzer target without libFuzzer: a main() that
 * feeds files to LLVMFuzzerTestOneInput, so every fuzz target also builds
 * with gcc and replays its corpus in ordinary test runs (after libgit2's
 * fuzzers/standalone_driver.c).
 *
 *   driver FILE|DIR...           run each file (each regular file of a DIR)
 *   driver --write-seeds DIR     let the target write its seed corpus, if it
 *                                defines fuzz_write_seeds(dir)
 *
 * Exit status 0 when every input ran; a property violation in the target
 * aborts, as it would under libFuzzer. Inputs are read whole into an
 * allocation of exactly their size, so ASan sees any read past the end.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
int fuzz_write_seeds(const char *dir) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            fprintf(stderr, "%s: out of memory\n", path);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger)
            free(buf);
        buf = bigger;
        cap *= 2;
    }
    int read_error = ferror(f);
    fclose(f);
    if (read_error) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return -1;
    }
    uint8_t *exact = malloc(len ? len : 1); /* exact size: overreads are caught */
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

int main(int argc, char **argv)
{
    size_t runs = 0;
    int failed = 0;
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) {
        if (!fuzz_write_seeds) {
            fprintf(stderr, "this target has no seed writer\n");
            return 2;
        }
        return fuzz_write_seeds(argv[2]) == 0 ? 0 : 1;
    }
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed |= run_file(argv[i]) != 0;
            runs++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char path[4096];
            struct stat fst;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (stat(path, &fst) != 0 || !S_ISREG(fst.st_mode))
                continue;
            failed |= run_file(path) != 0;
            runs++;
        }
        closedir(d);
    }
    printf("%s: %zu inputs replayed%s\n", argv[0], runs, failed ? ", some unreadable" : "");
    return failed;
}
