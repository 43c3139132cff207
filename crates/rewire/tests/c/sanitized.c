// A program for sanitizer builds: with "leak", four threads each lose an allocation
// (LeakSanitizer's report at exit, made by a tracer process on this memory); with
// "overflow", a heap buffer overflow (AddressSanitizer); with "race", two threads race on a
// counter (ThreadSanitizer).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *kept[4];
static int counter;

static void *leaks(void *arg) {
    long i = (long)arg;
    kept[i] = malloc(100 + i);
    char *lost = malloc(10);
    lost[0] = 1;
    return NULL;
}

static void *races(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) counter++;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    void *(*work)(void *) = strcmp(mode, "race") == 0 ? races : leaks;
    // Racing threads run at once; the others one after the other, so that the heap's layout
    // (in the overflow report) does not depend on how they were scheduled.
    int at_once = work == races;
    pthread_t t[4];
    for (long i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, work, (void *)i);
        if (!at_once) pthread_join(t[i], NULL);
    }
    for (int i = 0; at_once && i < 4; i++) pthread_join(t[i], NULL);
    if (strcmp(mode, "overflow") == 0) {
        char *p = malloc(8);
        p[8] = 1;
    }
    printf("%s done\n", mode);
    return 0;
}
