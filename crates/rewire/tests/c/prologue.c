/* Workers spend nearly all their time in `rep stosb`, the second instruction of fill():
   attaching finds them inside the bytes a hook overwrites. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdatomic.h>
__asm__(".text\n.globl fill\n.type fill,@function\n.p2align 4\nfill:\n"
        "  push %rbx\n"            /* 1 byte */
        "  rep stosb\n"            /* offset 1: rdi=buf, rcx=n, al=byte */
        "  mov $1, %eax\n"         /* offset 3 */
        "  pop %rbx\n  ret\n.size fill, .-fill\n");
#define N (64L << 20)
static atomic_long calls;
static long call_fill(char *buf, long n, int byte) {
    long r;
    __asm__ volatile("call fill" : "=a"(r), "+D"(buf), "+c"(n) : "a"(byte) : "memory", "rdx", "rsi", "r8", "r9", "r10", "r11", "cc");
    return r;
}
static void *worker(void *arg) {
    char *buf = malloc(N);
    for (int k = 0;; k++) {
        int byte = 'a' + k % 26;
        if (call_fill(buf, N, byte) != 1 || buf[0] != byte || buf[N / 2] != byte || buf[N - 1] != byte) {
            fprintf(stderr, "wrong fill\n");
            abort();
        }
        atomic_fetch_add(&calls, 1);
    }
    return arg;
}
int main(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, worker, 0);
    for (int n = 0; n < 200; n++) { printf("calls=%ld\n", atomic_load(&calls)); fflush(stdout); usleep(20000); }
    return 0;
}
