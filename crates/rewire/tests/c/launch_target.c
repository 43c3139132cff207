/* Calls a libc function and one of its own; exits 7. */
#include <stdio.h>
__attribute__((noinline)) int compute(int x) { return x * 2 + 1; }
int main(void) { puts("hello"); printf("compute=%d\n", compute(20)); return 7; }
