/* A library whose constructor ends the process: injecting it kills the target mid-operation. */
#include <unistd.h>
__attribute__((constructor)) static void leave(void) { _exit(3); }
