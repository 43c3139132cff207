/* Prints a line and crashes in a function a debugger can break in and backtrace through;
   with an argument it writes and exits 0 instead. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int crash(volatile int *p) { return *p; }

int main(int argc, char **argv) {
    (void)argv;
    printf("before the crash, %d argument(s)\n", argc - 1);
    fflush(stdout);
    if (argc > 1) {
        write(1, "no crash\n", 9);
        return 0;
    }
    return crash(NULL);
}
