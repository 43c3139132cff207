/* Benchmark parser 2: a chunked binary format (PNG-like): a signature, then chunks of
   4-byte big-endian length, 4-byte type and data, with a checksum over each. */
#include <stdio.h>
#include <stdint.h>
#include <string.h>

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

static uint32_t sum(const unsigned char *p, size_t n) {
    uint32_t s = 0x12345678;
    for (size_t i = 0; i < n; i++) s = (s << 5 | s >> 27) ^ p[i];
    return s;
}

__attribute__((noinline)) int fuzz_one(const char *path) {
    static unsigned char b[8192];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n < 8 || memcmp(b, "\x89TLV\r\n\x1a\n", 8)) { puts("no signature"); return 0; }
    size_t at = 8;
    int chunks = 0, bad = 0, header = 0, end = 0;
    while (at + 12 <= n && !end) {
        uint32_t len = be32(b + at), type = be32(b + at + 4);
        if (len > n - at - 12) { bad++; break; }
        uint32_t want = be32(b + at + 8 + len);
        if (sum(b + at + 4, len + 4) != want) bad++;
        switch (type) {
        case 0x48445220: header++; if (len != 13) bad++; break; /* "HDR " */
        case 0x44415441: if (!header) bad++; break;              /* "DATA" */
        case 0x454e4420: end = 1; break;                         /* "END " */
        default: if (!(type & 0x20000000)) bad++;                /* critical unknown */
        }
        chunks++;
        at += 12 + len;
    }
    printf("%d chunks, %d bad, header %d, end %d\n", chunks, bad, header, end);
    return 0;
}

int main(int argc, char **argv) { return fuzz_one(argv[1]) < 0; }
