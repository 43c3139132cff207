/* A JIT's pattern that a system call writes: code in a read+write+execute page runs, then
   read() puts new code into the same page, which runs next. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    const unsigned char ret7[] = {0xb8, 7, 0, 0, 0, 0xc3};  /* mov eax, 7; ret */
    const unsigned char ret9[] = {0xb8, 9, 0, 0, 0, 0xc3};  /* mov eax, 9; ret */
    memcpy(page, ret7, sizeof ret7);
    int first = ((int (*)(void))page)();
    int fds[2];
    if (pipe(fds) != 0 || write(fds[1], ret9, sizeof ret9) != sizeof ret9) return 1;
    ssize_t n = read(fds[0], page, sizeof ret9);
    int second = ((int (*)(void))page)();
    printf("first %d, read %zd, second %d\n", first, n, second);
    return 0;
}
