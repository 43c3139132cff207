// Process creation on the parent's memory: posix_spawn of a missing program returns ENOENT
// (glibc's child reports the exec error through memory it shares with the parent), a
// present one runs; a vfork child's stores are seen by its parent.
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) {
    (void)sig;
    got_usr1 = 1;
}

int main(void) {
    // glibc's posix_spawn child resets handled signals to SIG_DFL: its own, not the parent's.
    signal(SIGUSR1, on_usr1);
    pid_t pid;
    char *missing[] = {"/nonexistent/program", NULL};
    int r = posix_spawn(&pid, missing[0], NULL, NULL, missing, environ);
    printf("posix_spawn missing: %s\n", strerror(r));
    r = posix_spawnp(&pid, "no-such-program-anywhere", NULL, NULL, missing, environ);
    printf("posix_spawnp missing: %s\n", strerror(r));
    char *echo[] = {"echo", "spawned echo", NULL};
    fflush(stdout);
    r = posix_spawnp(&pid, "echo", NULL, NULL, echo, environ);
    int status = 0;
    waitpid(pid, &status, 0);
    printf("posix_spawnp echo: %d, exit %d\n", r, WEXITSTATUS(status));
    volatile int shared = 1;
    pid_t child = vfork();
    if (child == 0) {
        shared = 42;
        _exit(7);
    }
    waitpid(child, &status, 0);
    printf("vfork child stored %d, exit %d\n", shared, WEXITSTATUS(status));
    fflush(stdout);
    child = vfork();
    if (child == 0) {
        execlp("echo", "echo", "vfork then exec", (char *)NULL);
        _exit(127);
    }
    waitpid(child, &status, 0);
    printf("vfork exec exit %d\n", WEXITSTATUS(status));
    raise(SIGUSR1);
    printf("parent's handler still runs: %d\n", got_usr1);
    return 0;
}
