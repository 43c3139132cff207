// Runs off its stack (in the main thread, or in a second thread with "thread") and handles
// the SIGSEGV on an alternate stack: natively the handler runs and the program exits 3.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_segv(int sig, siginfo_t *info, void *uc) {
    (void)info;
    (void)uc;
    stack_t now;
    sigaltstack(NULL, &now);
    // On the alternate stack: it cannot be changed (EPERM) and says SS_ONSTACK.
    stack_t other = {.ss_sp = malloc(65536), .ss_size = 65536};
    int changed = sigaltstack(&other, NULL);
    char msg[96];
    int n = snprintf(msg, sizeof msg, "caught signal %d, on alternate stack %d, change refused %d\n", sig,
                     (now.ss_flags & SS_ONSTACK) != 0, changed == -1);
    write(1, msg, n);
    _exit(3);
}

static int recurse(volatile char *prev, int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[1023] = prev ? prev[0] : 0;
    return recurse(frame, depth + 1) + frame[depth % 1024];
}

static void arm(void) {
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
    if (sigaltstack(&ss, NULL) != 0) {
        perror("sigaltstack");
        exit(1);
    }
    stack_t back;
    sigaltstack(NULL, &back);
    if (back.ss_sp != ss.ss_sp || back.ss_size != ss.ss_size || back.ss_flags != 0) {
        puts("sigaltstack reads back differently");
        exit(1);
    }
}

static void *thread_main(void *arg) {
    (void)arg;
    arm();
    recurse(NULL, 0);
    return NULL;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    stack_t bad = {.ss_sp = malloc(64), .ss_size = 64};
    printf("too small: %d\n", sigaltstack(&bad, NULL) == -1);
    stack_t none;
    sigaltstack(NULL, &none);
    printf("initially disabled: %d\n", (none.ss_flags & SS_DISABLE) != 0);
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, thread_main, NULL);
        pthread_join(t, NULL);
    } else {
        arm();
        recurse(NULL, 0);
    }
    return 0;
}
