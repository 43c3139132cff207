// Lists the descriptors the program has (from /proc/self/fd) and the number open() gives it,
// on stdout, or on stderr when stdout is closed. With "daemon": forks a child that redirects
// its standard descriptors to /dev/null and lives on for 3 s, as daemons do, and returns.
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "daemon") == 0) {
        if (fork() == 0) {
            setsid();
            int null = open("/dev/null", O_RDWR);
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            close(null);
            sleep(3);
            _exit(0);
        }
        puts("parent done");
        return 0;
    }
    int out = fcntl(1, F_GETFD) >= 0 ? 1 : 2;
    char line[4096];
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d)) {
            n += snprintf(line + n, sizeof line - n, "%s ", e->d_name);
        }
    }
    closedir(d);
    int fd = open("/dev/null", O_RDONLY);
    n += snprintf(line + n, sizeof line - n, "\nopen gives %d\n", fd);
    write(out, line, n);
    return 0;
}
