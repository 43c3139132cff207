/* A target for persistent mode: fuzz_one reads and scores one input file, and crashes
   (abort) on inputs that start with "FZ". */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int fuzz_one(const char *path) {
    unsigned char b[256];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    int s = 0;
    for (size_t i = 0; i < n; i++) s += b[i];
    if (n >= 2 && b[0] == 'F' && b[1] == 'Z') abort();
    printf("score %d len %zu\n", s, n);
    fflush(stdout);
    return s;
}

int main(int argc, char **argv) { return fuzz_one(argv[1]) < 0; }
