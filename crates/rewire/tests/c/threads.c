/* Four threads call compute() forever and check every result is the native or the hooked one. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdatomic.h>
__attribute__((noinline)) long compute(long x) { return x * 2 + 1; }
static atomic_long hooked, plain;
static void *worker(void *arg) {
    for (long i = 0;; i++) {
        long r = compute(i);
        if (r == i * 2 + 1) atomic_fetch_add(&plain, 1);
        else if (r == i * 2 + 1001) atomic_fetch_add(&hooked, 1);
        else { fprintf(stderr, "wrong result %ld for %ld\n", r, i); abort(); }
    }
    return arg;
}
int main(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, 0);
    for (int n = 0; n < 400; n++) {
        printf("hooked=%ld plain=%ld\n", atomic_load(&hooked), atomic_load(&plain));
        fflush(stdout);
        usleep(20000);
    }
    return 0;
}
