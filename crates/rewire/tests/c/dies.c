/* Ways for a process to end, for tests/never_lost.rs. `marker` runs just before the end in
 * every mode: a drcov file written at the end must hold its block.
 *
 *   dies raise SIG        kill(getpid(), SIG)
 *   dies blocked SIG      the same with SIG blocked, then unblock it
 *   dies wait             print "ready", then wait in pause() to be killed from outside
 *   dies spin             print "ready", then loop without system calls until killed
 *   dies spin-busy        the same, while a second thread makes system calls without end
 *                         (the engine's lock is often taken when the signal comes)
 *   dies fault KIND       segv | bus | fpe | ill: the fault itself
 *   dies pipe             write to a pipe nobody reads (SIGPIPE)
 *   dies timer KIND       real | virtual | prof: an interval timer's signal while looping
 *   dies abort            a line on stderr, then abort()
 *   dies thread-exit-group  a second thread calls exit_group(3) while main waits
 *   dies thread-exit      a second thread calls exit (the thread's raw _exit) while main
 *                         waits for it; main then runs `after_thread` and returns 5
 *   dies main-exit        main calls exit (the thread only) while a second thread runs on;
 *                         that thread runs `after_thread` and exits the process with 4
 *   dies exec             execv("/bin/true")
 *   dies exit N           return N
 *   dies dispositions     print what sigaction says of a few signals, ignore SIGHUP and
 *                         raise it, handle SIGUSR1 once, set it back to SIG_DFL, raise it
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

volatile long sink;

__attribute__((noinline)) void marker(void) {
    for (int i = 0; i < 100; i++) sink += i;
}

__attribute__((noinline)) void after_thread(void) {
    for (int i = 0; i < 100; i++) sink ^= i;
}

static void ready(void) {
    marker();
    fputs("ready\n", stdout);
    fflush(stdout);
}

static void spin(void) {
    for (;;) sink++;
}

static volatile int thread_done;

static void on_usr1(int sig) {
    (void)sig;
    fputs("handled\n", stdout);
}

static void print_dispositions(void) {
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGSEGV, SIGRTMIN, SIGRTMAX};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        sigaction(sigs[i], NULL, &old);
        printf("%d:%s ", sigs[i], old.sa_handler == SIG_DFL ? "default" : old.sa_handler == SIG_IGN ? "ignored" : "handler");
    }
    putchar('\n');
}

static void *syscall_thread(void *arg) {
    (void)arg;
    for (;;) getppid();
    return NULL;
}

static void *exit_group_thread(void *arg) {
    (void)arg;
    marker();
    syscall(SYS_exit_group, 3);
    return NULL;
}

static void *exit_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) sink += i;
    syscall(SYS_exit, 0);
    return NULL;
}

static void *outliving_thread(void *arg) {
    (void)arg;
    while (!thread_done) sched_yield();
    usleep(10000); /* main has exited by now */
    after_thread();
    marker();
    exit(4);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    const char *arg = argc > 2 ? argv[2] : "";
    if (!strcmp(mode, "raise")) {
        marker();
        kill(getpid(), atoi(arg));
        return 0;
    }
    if (!strcmp(mode, "blocked")) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, atoi(arg));
        sigprocmask(SIG_BLOCK, &set, NULL);
        kill(getpid(), atoi(arg));
        marker();
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        return 0;
    }
    if (!strcmp(mode, "wait")) {
        ready();
        for (;;) pause();
    }
    if (!strcmp(mode, "spin")) {
        ready();
        spin();
    }
    if (!strcmp(mode, "spin-busy")) {
        pthread_t t;
        pthread_create(&t, NULL, syscall_thread, NULL);
        ready();
        spin();
    }
    if (!strcmp(mode, "fault")) {
        marker();
        if (!strcmp(arg, "segv")) *(volatile int *)16 = 1;
        if (!strcmp(arg, "fpe")) {
            volatile int zero = 0;
            sink = 7 / zero;
        }
        if (!strcmp(arg, "ill")) __asm__ volatile("ud2");
        if (!strcmp(arg, "bus")) {
            int fd = memfd_create("empty", 0);
            volatile char *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
            sink = p[0];
        }
        return 1;
    }
    if (!strcmp(mode, "pipe")) {
        int fds[2];
        if (pipe(fds)) return 1;
        close(fds[0]);
        marker();
        write(fds[1], "x", 1);
        return 1;
    }
    if (!strcmp(mode, "timer")) {
        int which = !strcmp(arg, "real") ? ITIMER_REAL : !strcmp(arg, "virtual") ? ITIMER_VIRTUAL : ITIMER_PROF;
        struct itimerval t = {{0, 20000}, {0, 20000}};
        marker();
        setitimer(which, &t, NULL);
        spin();
    }
    if (!strcmp(mode, "abort")) {
        marker();
        fputs("about to abort\n", stderr);
        abort();
    }
    if (!strcmp(mode, "thread-exit-group")) {
        pthread_t t;
        pthread_create(&t, NULL, exit_group_thread, NULL);
        pthread_join(t, NULL);
        return 1;
    }
    if (!strcmp(mode, "thread-exit")) {
        pthread_t t;
        pthread_create(&t, NULL, exit_thread, NULL);
        pthread_join(t, NULL);
        after_thread();
        marker();
        return 5;
    }
    if (!strcmp(mode, "main-exit")) {
        pthread_t t;
        pthread_create(&t, NULL, outliving_thread, NULL);
        thread_done = 1;
        syscall(SYS_exit, 0);
    }
    if (!strcmp(mode, "exec")) {
        marker();
        execl("/bin/true", "true", (char *)NULL);
        return 1;
    }
    if (!strcmp(mode, "exit")) {
        marker();
        return atoi(arg);
    }
    if (!strcmp(mode, "dispositions")) {
        print_dispositions();
        signal(SIGHUP, SIG_IGN);
        raise(SIGHUP);
        signal(SIGUSR1, on_usr1);
        print_dispositions();
        raise(SIGUSR1);
        signal(SIGUSR1, SIG_DFL);
        print_dispositions();
        fflush(stdout);
        marker();
        raise(SIGUSR1);
        return 1;
    }
    fprintf(stderr, "dies: unknown mode %s\n", mode);
    return 2;
}
