// fexecve of a descriptor (close-on-exec, as glibc's fexecve users often open it) and
// execveat relative to a directory descriptor: the program runs as with execve.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void run(const char *how, void (*exec)(void)) {
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        exec();
        printf("%s failed\n", how);
        fflush(stdout);
        _exit(127);
    }
    int status;
    waitpid(child, &status, 0);
    printf("%s: exit %d\n", how, WEXITSTATUS(status));
}

static void by_fd(void) {
    char *argv[] = {"echo", "run by fexecve", NULL};
    fexecve(open("/bin/echo", O_RDONLY | O_CLOEXEC), argv, environ);
}

static void by_dir(void) {
    char *argv[] = {"echo", "run by execveat", NULL};
    syscall(SYS_execveat, open("/bin", O_RDONLY | O_DIRECTORY), "echo", argv, environ, 0);
}

static void missing(void) {
    char *argv[] = {"x", NULL};
    int r = syscall(SYS_execveat, open("/bin", O_RDONLY | O_DIRECTORY), "no-such-program", argv, environ, 0);
    printf("missing: %d %s\n", r, strerror(errno));
    fflush(stdout);
}

int main(void) {
    run("fexecve", by_fd);
    run("execveat", by_dir);
    run("execveat missing", missing);
    return 0;
}
