/* A small parser for the AFL++ tests: its paths depend on the input's first bytes and
   its length, and it crashes (a write through a null pointer) behind two comparisons. */
#include <stdio.h>
#include <string.h>

static volatile int *nowhere;

static int parse(const unsigned char *b, size_t n) {
    int score = 0;
    if (n >= 3 && b[0] == 'F') {
        score += 10;
        if (b[1] == 'Z') *nowhere = 1;
    }
    if (n > 16) score += 5;
    for (size_t i = 0; i < n; i++) score += (b[i] & 1) ? 2 : 1;
    return score;
}

int main(int argc, char **argv) {
    unsigned char buf[512];
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : stdin;
    if (!f) return 2;
    size_t n = fread(buf, 1, sizeof buf, f);
    printf("score %d\n", parse(buf, n));
    return 0;
}
