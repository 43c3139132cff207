/* Detours for launch_target.c: each calls the original through rewire_orig_<name>. */
#include <stdio.h>
int (*rewire_orig_my_compute)(int);
int my_compute(int x) { return rewire_orig_my_compute(x) + 1000; }
int (*rewire_orig_my_puts)(const char *);
int my_puts(const char *s) { fputs("[hooked] ", stdout); return rewire_orig_my_puts(s); }
