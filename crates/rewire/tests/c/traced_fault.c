/* A tracer's view of a fault, as gdb's start-up probe makes one: the child asks to be
   traced, stops, then returns to a page that is not executable. The parent reads the
   child's registers at the fault and prints whether its pc is that page, then passes the
   signal on and prints how the child ended. With an argument the child has a SIGSEGV
   handler, which exits 7. */
#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_segv(int sig) { (void)sig; _exit(7); }

int main(int argc, char **argv) {
    (void)argv;
    if (argc > 1) signal(SIGSEGV, on_segv);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pid_t pid = fork();
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        raise(SIGSTOP);
        __asm__ volatile("push %0; ret" : : "r"(page));
        _exit(1);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("stopped by %d\n", WIFSTOPPED(st) ? WSTOPSIG(st) : -1);
    ptrace(PTRACE_CONT, pid, NULL, NULL);
    waitpid(pid, &st, 0);
    long rip = ptrace(PTRACE_PEEKUSER, pid, offsetof(struct user_regs_struct, rip), NULL);
    printf("fault signal %d, pc at the page: %s\n", WIFSTOPPED(st) ? WSTOPSIG(st) : -1, rip == (long)page ? "yes" : "no");
    ptrace(PTRACE_CONT, pid, NULL, (void *)(long)WSTOPSIG(st));
    waitpid(pid, &st, 0);
    if (WIFSIGNALED(st)) printf("child ended by signal %d\n", WTERMSIG(st));
    else printf("child exited %d\n", WEXITSTATUS(st));
    return 0;
}
