/* A target only comparison logging gets through: a 32-bit magic number, then a string
   compared with strcmp and bytes compared with memcmp. It aborts past all three. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    unsigned char buf[64] = {0};
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (n < 24) return 0;
    uint32_t magic;
    memcpy(&magic, buf, 4);
    if (magic != 0x5e3a91c7u) return 0;
    char word[9] = {0};
    memcpy(word, buf + 4, 8);
    if (strcmp(word, "rewired!") != 0) return 0;
    if (memcmp(buf + 12, "CMPLOG-works", 12) != 0) return 0;
    puts("all three");
    abort();
}
