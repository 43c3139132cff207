// What a program reads of /proc/self/maps: its own mappings (one made between open and
// read included), its break as [heap], nothing of an engine running it.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    char *small = malloc(100);
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    void *made = mmap(NULL, 3 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static char text[1 << 20];
    size_t len = 0;
    for (ssize_t n; (n = read(fd, text + len, sizeof text - 1 - len)) > 0;) len += n;
    text[len] = 0;
    close(fd);
    char start[32];
    snprintf(start, sizeof start, "\n%lx-", (unsigned long)made);
    printf("mapping made after open: %d\n", strstr(text, start) != NULL);
    printf("heap: %d\n", strstr(text, "[heap]") != NULL && small != NULL);
    printf("stack: %d, vdso: %d\n", strstr(text, "[stack]") != NULL, strstr(text, "[vdso]") != NULL);
    // rewire's binary and its code cache
    printf("engine seen: %d\n", strstr(text, "/rewire\n") != NULL || strstr(text, "memfd:rewire") != NULL);
    return 0;
}
