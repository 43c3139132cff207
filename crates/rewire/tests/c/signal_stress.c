// 16 threads in a ring, each sending SIGUSR1 to the next one N times (waiting for the previous
// one to be handled, so none coalesce) and counting what it receives: every signal must be
// accounted for, each handled on the thread it was sent to.
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#define T 16
static pthread_t tids[T];
static pthread_barrier_t ready;
static _Atomic long received[T], misdirected;
static __thread int me;
static __thread long my_tid;
static long per;
static void on_usr1(int s) {
    (void)s;
    if (my_tid != syscall(SYS_gettid)) misdirected++;
    atomic_fetch_add(&received[me], 1);
}
static void *run(void *arg) {
    me = (int)(long)arg;
    my_tid = syscall(SYS_gettid);
    int to = (me + 1) % T;
    pthread_barrier_wait(&ready);
    for (long i = 0; i < per; i++) {
        while (atomic_load(&received[to]) < i) sched_yield();
        pthread_kill(tids[to], SIGUSR1);
    }
    while (atomic_load(&received[me]) < per) sched_yield();
    return 0;
}
int main(int argc, char **argv) {
    per = argc > 1 ? atol(argv[1]) : 100000;
    signal(SIGUSR1, on_usr1);
    pthread_barrier_init(&ready, 0, T);
    for (long i = 0; i < T; i++) pthread_create(&tids[i], 0, run, (void *)i);
    for (int i = 0; i < T; i++) pthread_join(tids[i], 0);
    long total = 0;
    for (int i = 0; i < T; i++) total += received[i];
    printf("signals %ld of %ld, misdirected %ld\n", total, per * T, (long)misdirected);
    return total == per * T && !misdirected ? 0 : 1;
}
