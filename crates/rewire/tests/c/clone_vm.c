// clone(CLONE_VM) without CLONE_THREAD or CLONE_VFORK: a process beside its parent on the
// parent's memory (LeakSanitizer's tracer is one). The parent sees the child's stores, its
// descriptors when CLONE_FILES shares the table, and the work of a signal handler the child
// ran; the child's exit status reaches the parent.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile long shared;
static volatile sig_atomic_t handled_by;
static volatile int child_fd = -1;
static volatile int child_ready;
static char stack[1 << 16] __attribute__((aligned(16)));

static void on_usr1(int sig) {
    (void)sig;
    handled_by = getpid();
}

static int sum(void *arg) {
    for (int i = 0; i < 1000; i++) shared += i;
    printf("child: %s\n", (const char *)arg);
    fflush(stdout);
    return 7;
}

static int opens(void *arg) {
    (void)arg;
    child_fd = open("/dev/null", O_RDONLY);
    return 0;
}

static int waits_for_a_signal(void *arg) {
    (void)arg;
    child_ready = 1;
    while (!handled_by) {
    }
    return handled_by == getpid() ? 3 : 4;
}

static int status_of(pid_t pid) {
    int st;
    if (waitpid(pid, &st, __WALL) != pid) {
        perror("waitpid");
        exit(1);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static pid_t start(int (*fn)(void *), int flags, void *arg) {
    pid_t pid = clone(fn, stack + sizeof stack, flags, arg);
    if (pid < 0) {
        perror("clone");
        exit(1);
    }
    return pid;
}

int main(void) {
    int tracer = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED;
    int flags[] = {CLONE_VM | SIGCHLD, tracer};
    for (int k = 0; k < 2; k++) {
        shared = k;
        int st = status_of(start(sum, flags[k], "on its parent's memory"));
        printf("flags %#x: exit %d, parent sees %ld\n", flags[k], st, shared);
    }
    int st = status_of(start(opens, CLONE_VM | CLONE_FILES | SIGCHLD, NULL));
    printf("child's descriptor: %d, valid in parent: %d, exit %d\n", child_fd, fcntl(child_fd, F_GETFD) != -1, st);
    signal(SIGUSR1, on_usr1);
    pid_t pid = start(waits_for_a_signal, CLONE_VM | SIGCHLD, NULL);
    while (!child_ready) {
    }
    kill(pid, SIGUSR1);
    printf("handler ran in the child: exit %d\n", status_of(pid));
    return 0;
}
