/* Benchmark parser 1: INI files (sections, key=value pairs, comments, quoting). */
#include <stdio.h>
#include <string.h>
#include <ctype.h>

__attribute__((noinline)) int fuzz_one(const char *path) {
    static char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int sections = 0, keys = 0, errors = 0;
    char section[64] = "";
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        while (isspace((unsigned char)*line)) line++;
        if (*line == ';' || *line == '#' || !*line) continue;
        if (*line == '[') {
            char *end = strchr(line, ']');
            if (!end || end - line > 60) { errors++; continue; }
            memcpy(section, line + 1, end - line - 1);
            section[end - line - 1] = 0;
            sections++;
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq) { errors++; continue; }
        char *v = eq + 1;
        while (isspace((unsigned char)*v)) v++;
        if (*v == '"') { if (!strchr(v + 1, '"')) errors++; }
        else if (isdigit((unsigned char)*v)) { while (isdigit((unsigned char)*v)) v++; if (*v && !isspace((unsigned char)*v)) errors++; }
        keys++;
    }
    printf("%d sections, %d keys, %d errors in [%s]\n", sections, keys, errors, section);
    return 0;
}

int main(int argc, char **argv) { return fuzz_one(argv[1]) < 0; }
