// Programs for the engine's tests: each mode prints results that must be identical natively
// and under `rewire run`. Built as PIE, non-PIE and static by the tests.
#define _GNU_SOURCE
#include <fcntl.h>
#include <immintrin.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <asm/prctl.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int jump_table(int i) {
    switch (i % 13) {
    case 0: return i * 3;
    case 1: return i ^ 0x55;
    case 2: return i - 7;
    case 3: return i << 2;
    case 4: return i / 3;
    case 5: return ~i;
    case 6: return i * i;
    case 7: return i + 1000;
    case 8: return i & 0xf0;
    case 9: return i | 0x101;
    case 10: return -i;
    case 11: return i % 7;
    default: return 42;
    }
}

static long add(long a, long b) { return a + b; }
static long sub(long a, long b) { return a - b; }
static long mul(long a, long b) { return a * b; }
static long (*const ops[])(long, long) = {add, sub, mul};

static int cmp_desc(const void *a, const void *b) { return *(const int *)b - *(const int *)a; }

__attribute__((noinline)) static long depth(long n) {
    volatile long pad[4] = {n, n, n, n};
    return n == 0 ? 0 : 1 + depth(n - 1) + (pad[0] - pad[3]);
}

static jmp_buf jb;
__attribute__((noinline)) static void thrower(int level, int code) {
    if (level == 0) longjmp(jb, code);
    thrower(level - 1, code);
}

static const unsigned char table[256] = {1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233};
static long counters[64];
static __thread long tls_counter = 5;
static __thread char tls_buf[100];

__attribute__((target("avx2"))) static long avx2_sum(void) {
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < 1000; i++) {
        __m256i v = _mm256_set_epi32(i, i * 2, i * 3, i * 4, i * 5, i * 6, i * 7, i * 8);
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, v));
    }
    int out[8];
    _mm256_storeu_si256((__m256i *)out, acc);
    long s = 0;
    for (int i = 0; i < 8; i++) s += out[i];
    return s;
}

__attribute__((target("avx"))) static double avx_dot(void) {
    double a[64], b[64];
    for (int i = 0; i < 64; i++) { a[i] = i * 0.5; b[i] = 64 - i; }
    __m256d acc = _mm256_setzero_pd();
    for (int i = 0; i < 64; i += 4) acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i)));
    double out[4];
    _mm256_storeu_pd(out, acc);
    return out[0] + out[1] + out[2] + out[3];
}

// A SIGUSR1 handler that reads the interrupted SIMD state from its frame and changes it:
// x87 control word, MXCSR, the low half of xmm0; the upper half of ymm0 must survive.
static void on_usr1_simd(int sig, siginfo_t *si, void *u) {
    (void)sig;
    (void)si;
    struct _libc_fpstate *fp = ((ucontext_t *)u)->uc_mcontext.fpregs;
    printf("simd handler cwd %#x mxcsr %#x xmm0 %#x xmm5 %#x\n", fp->cwd, fp->mxcsr, fp->_xmm[0].element[0], fp->_xmm[5].element[1]);
    fp->_xmm[0].element[0] = 0x11112222;
    fp->cwd = 0x27f;
    fp->mxcsr |= 0x6000;
}

__attribute__((target("avx"))) static void simd_across_a_signal(void) {
    unsigned short cw = 0x7f;
    unsigned int csr = 0x3f80, ymm0[8] = {0x12345678, 2, 3, 4, 5, 6, 7, 8}, ymm5[8] = {0, 0xabcd, 0, 0, 0, 0, 0, 9};
    __asm__ volatile("fldcw %0\n\tldmxcsr %1" ::"m"(cw), "m"(csr));
    // Load ymm0 and ymm5, send the signal with raw system calls, read ymm0 back.
    __asm__ volatile("vmovdqu %0, %%ymm0\n\t"
                     "vmovdqu %1, %%ymm5\n\t"
                     "mov $39, %%eax\n\tsyscall\n\t"
                     "mov %%eax, %%edi\n\tmov $10, %%esi\n\tmov $62, %%eax\n\tsyscall\n\t"
                     "vmovdqu %%ymm0, %0"
                     : "+m"(ymm0)
                     : "m"(ymm5)
                     : "rax", "rdi", "rsi", "rcx", "r11", "xmm0", "xmm5", "memory");
    __asm__ volatile("fnstcw %0\n\tstmxcsr %1" : "=m"(cw), "=m"(csr));
    printf("simd after ymm0 %#x,%#x,%#x mxcsr %#x cwd %#x\n", ymm0[0], ymm0[1], ymm0[7], csr, cw);
}

static int first_phdr(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    *(const ElfW(Phdr) **)data = info->dlpi_phdr;
    return 1;
}

static __thread long thread_counter;
static long thread_results[8];
static void *thread_work(void *arg) {
    long id = (long)arg;
    for (long i = 0; i < 200000; i++) thread_counter += i % (id + 2);
    thread_results[id] = thread_counter;
    return (void *)(id * 10);
}

static long times_three(long x) { return 3 * x; }
static long (*volatile indirect_target)(long) = times_three;
static void *indirect_calls(void *arg) {
    long sum = 0;
    for (long i = 0; i < 100000; i++) sum += indirect_target(i);
    return (void *)(sum + (long)arg);
}

static sigjmp_buf segv_jb;
static volatile sig_atomic_t faults, alarms;
static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    faults += si->si_addr == (void *)24;
    siglongjmp(segv_jb, 1);
}
static void on_alarm(int sig) { (void)sig; alarms++; }
static char *alt_base;
static volatile int on_alt;
static void on_usr1(int sig) {
    char here;
    (void)sig;
    on_alt = &here >= alt_base && &here < alt_base + 65536;
}
static int pipe_fds[2];
static void alarm_write(int sig) {
    (void)sig;
    alarms++;
    if (write(pipe_fds[1], "x", 1) != 1) _exit(9);
}

extern char **environ;
extern char _start[];

__attribute__((noinline)) void crash_here(volatile int *p) { *p = 1; }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "switch")) {
        long s = 0;
        for (int i = 0; i < 100000; i++) s += jump_table(i);
        printf("switch %ld\n", s);
    } else if (!strcmp(mode, "fnptr")) {
        long v = 1;
        for (int i = 0; i < 30000; i++) v = ops[i % 3](v, i) & 0xffffff;
        int a[100];
        for (int i = 0; i < 100; i++) a[i] = (i * 37) % 101;
        qsort(a, 100, sizeof a[0], cmp_desc);
        printf("fnptr %ld %d %d %d\n", v, a[0], a[50], a[99]);
    } else if (!strcmp(mode, "recursion")) {
        printf("recursion %ld\n", depth(100000));
    } else if (!strcmp(mode, "longjmp")) {
        int total = 0;
        for (int i = 1; i <= 5; i++) {
            int r = setjmp(jb);
            if (r == 0) thrower(i * 10, i);
            else total += r;
        }
        printf("longjmp %d\n", total);
    } else if (!strcmp(mode, "data")) {
        long s = 0;
        for (int i = 0; i < 64; i++) counters[i] += table[i % 12] * i;
        for (int i = 0; i < 64; i++) s += counters[i];
        char buf[64];
        snprintf(buf, sizeof buf, "%s-%x", "data", (unsigned)s);
        printf("%s %zu\n", buf, strlen(buf));
    } else if (!strcmp(mode, "tls")) {
        for (int i = 0; i < 1000; i++) tls_counter += i;
        strcpy(tls_buf, "thread-local");
        printf("tls %ld %s %d\n", tls_counter, tls_buf, (char *)&tls_counter != tls_buf);
    } else if (!strcmp(mode, "avx")) {
        if (__builtin_cpu_supports("avx2")) printf("avx2 %ld\n", avx2_sum());
        if (__builtin_cpu_supports("avx")) printf("avx %.1f\n", avx_dot());
        printf("avx done\n");
    } else if (!strcmp(mode, "exe")) {
        char link[PATH_MAX] = {0}, real[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
        if (n < 0 || !realpath(argv[0], real)) return 2;
        int fd = open("/proc/self/exe", O_RDONLY);
        char magic[4] = {0};
        if (fd < 0 || read(fd, magic, 4) != 4) return 3;
        printf("exe same=%d elf=%d\n", strcmp(link, real) == 0, memcmp(magic, "\177ELF", 4) == 0);
    } else if (!strcmp(mode, "auxv")) {
        const ElfW(Phdr) *phdr = 0;
        dl_iterate_phdr(first_phdr, &phdr);
        const char *execfn = (const char *)getauxval(AT_EXECFN);
        printf("auxv entry=%d phdr=%d phnum=%d execfn=%d random=%d pagesz=%lu vdso=%d\n",
               getauxval(AT_ENTRY) == (unsigned long)_start, getauxval(AT_PHDR) == (unsigned long)phdr,
               getauxval(AT_PHNUM) > 2, execfn && !strcmp(execfn, argv[0]), getauxval(AT_RANDOM) != 0,
               getauxval(AT_PAGESZ), getauxval(AT_SYSINFO_EHDR) != 0);
    } else if (!strcmp(mode, "brk")) {
        char *start = sbrk(0);
        char *p = sbrk(1 << 20);
        memset(p, 7, 1 << 20);
        char *q = sbrk(0);
        sbrk(-(1 << 19));
        long sum = 0;
        for (int i = 0; i < 10000; i++) {
            char *m = malloc(i % 500 + 1);
            m[0] = (char)i;
            sum += m[0];
            if (i % 3) free(m);
        }
        printf("brk grew=%ld shrunk=%ld sum=%ld\n", (long)(q - start), (long)(q - (char *)sbrk(0)), sum);
    } else if (!strcmp(mode, "fork")) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            printf("child says hi\n");
            return 7;
        }
        int st = 0;
        waitpid(pid, &st, 0);
        pid = fork();
        if (pid == 0) {
            execl("/bin/echo", "echo", "exec'd", "echo", (char *)0);
            _exit(99);
        }
        int st2 = 0;
        waitpid(pid, &st2, 0);
        printf("fork child status %d, exec child status %d\n", WEXITSTATUS(st), WEXITSTATUS(st2));
    } else if (!strcmp(mode, "threads")) {
        pthread_t t[8];
        for (long i = 0; i < 8; i++) pthread_create(&t[i], 0, thread_work, (void *)i);
        long joined = 0;
        for (int i = 0; i < 8; i++) {
            void *r;
            pthread_join(t[i], &r);
            joined += (long)r;
        }
        printf("threads %ld main-counter %ld:", joined, thread_counter);
        for (int i = 0; i < 8; i++) printf(" %ld", thread_results[i]);
        printf("\n");
    } else if (!strcmp(mode, "indirect-threads")) {
        // 4 threads, 100,000 calls each through a function pointer: 800,000 lookups (call
        // and return) under --no-traces, all made by threads gone before the process ends.
        pthread_t t[4];
        long sum = 0;
        for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, indirect_calls, (void *)i);
        for (int i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            sum += (long)r;
        }
        printf("indirect-threads %ld\n", sum);
    } else if (!strcmp(mode, "gs")) {
        // The program's own GS base (the engine keeps GS for itself and emulates the program's).
        static long area[4] = {11, 22, 33, 44};
        if (syscall(SYS_arch_prctl, ARCH_SET_GS, area)) return 5;
        long v, idx = 2;
        __asm__ volatile("movq %%gs:8, %0" : "=r"(v));
        __asm__ volatile("movq %0, %%gs:(,%1,8)" : : "r"(v * 10), "r"(idx) : "memory");
        long got = 0;
        syscall(SYS_arch_prctl, ARCH_GET_GS, &got);
        printf("gs %ld %ld %d\n", v, area[2], got == (long)area);
    } else if (!strcmp(mode, "loops")) {
        // loop and jrcxz exist only with 8-bit displacements: the engine rewrites them.
        long n = 0, rcx = 1000, zero_taken = 0;
        __asm__ volatile("1: incq %0\n\tloop 1b" : "+r"(n), "+c"(rcx));
        __asm__ volatile("xorl %%ecx, %%ecx\n\tjrcxz 2f\n\tjmp 3f\n2: movq $1, %0\n3:" : "=r"(zero_taken) : : "rcx");
        printf("loops %ld %ld %ld\n", n, rcx, zero_taken);
    } else if (!strcmp(mode, "hot")) {
        // Nested loops around a hot indirect call and a hot switch: trace material.
        long s = 0;
        for (int i = 0; i < 300; i++)
            for (int j = 0; j < 200; j++) {
                s = ops[(i + j) % 3](s, j) & 0xffffff;
                s += jump_table(i * j);
            }
        printf("hot %ld\n", s);
    } else if (!strcmp(mode, "signals")) {
        // A SIGSEGV handler that siglongjmps out, three times.
        struct sigaction sa = {0};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, 0);
        for (int i = 0; i < 3; i++)
            if (!sigsetjmp(segv_jb, 1)) crash_here((volatile int *)24);
        // SIGALRM interrupting a tight loop.
        signal(SIGALRM, on_alarm);
        struct itimerval it = {{0, 0}, {0, 20000}};
        setitimer(ITIMER_REAL, &it, 0);
        volatile unsigned long spins = 0;
        while (!alarms) spins++;
        // A blocking read: restarted with SA_RESTART (the handler writes what it reads)...
        if (pipe(pipe_fds)) return 4;
        struct sigaction rs = {0};
        rs.sa_handler = alarm_write;
        rs.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &rs, 0);
        setitimer(ITIMER_REAL, &it, 0);
        char c = 0;
        ssize_t n1 = read(pipe_fds[0], &c, 1);
        // ... and interrupted with EINTR without it.
        rs.sa_handler = on_alarm;
        rs.sa_flags = 0;
        sigaction(SIGALRM, &rs, 0);
        setitimer(ITIMER_REAL, &it, 0);
        ssize_t n2 = read(pipe_fds[0], &c, 1);
        int eintr = n2 < 0 && errno == EINTR;
        // A handler on an alternate stack.
        stack_t ss = {.ss_sp = alt_base = malloc(65536), .ss_size = 65536, .ss_flags = 0};
        sigaltstack(&ss, 0);
        struct sigaction us = {0};
        us.sa_handler = on_usr1;
        us.sa_flags = SA_ONSTACK;
        sigaction(SIGUSR1, &us, 0);
        raise(SIGUSR1);
        printf("signals faults=%d alarms=%d restarted=%zd eintr=%d altstack=%d\n", (int)faults, (int)alarms, n1, eintr, (int)on_alt);
    } else if (!strcmp(mode, "simd-signal")) {
        struct sigaction sa = {0};
        sa.sa_sigaction = on_usr1_simd;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGUSR1, &sa, 0);
        if (__builtin_cpu_supports("avx")) simd_across_a_signal();
        printf("simd done\n");
    } else if (!strcmp(mode, "abort")) {
        printf("aborting\n");
        fflush(stdout);
        abort();
    } else if (!strcmp(mode, "dlopen")) {
        double sum = 0;
        for (int i = 0; i < 3; i++) {
            void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
            double (*cosine)(double) = h ? (double (*)(double))dlsym(h, "cos") : 0;
            if (!cosine) return 6;
            sum += cosine(0.5 * i);
            dlclose(h);
        }
        printf("dlopen %.6f\n", sum);
    } else if (!strcmp(mode, "spawn")) {
        pid_t pid;
        char *args[] = {"echo", "spawned", 0};
        int r = posix_spawn(&pid, "/bin/echo", 0, 0, args, environ);
        int st = 0;
        waitpid(pid, &st, 0);
        printf("spawn %d %d\n", r, WEXITSTATUS(st));
    } else if (!strcmp(mode, "jit")) {
        // mov eax, imm32; ret — rewritten and rerun in one RWX page, then through RW<->RX cycles.
        unsigned char stub[] = {0xb8, 0, 0, 0, 0, 0xc3};
        unsigned char *rwx = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *rw = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        long sum = 0;
        for (int i = 0; i < 200; i++) {
            memcpy(stub + 1, &i, 4);
            memcpy(rwx, stub, sizeof stub);
            sum += ((int (*)(void))rwx)();
            mprotect(rw, 4096, PROT_READ | PROT_WRITE);
            int v = i * 3;
            memcpy(stub + 1, &v, 4);
            memcpy(rw, stub, sizeof stub);
            mprotect(rw, 4096, PROT_READ | PROT_EXEC);
            sum += ((int (*)(void))rw)();
        }
        printf("jit %ld\n", sum);
    } else if (!strcmp(mode, "execfail")) {
        // A failed execve returns its error and changes nothing.
        int a = execl("/nonexistent/program", "x", (char *)0);
        int ea = errno;
        int b = execl("/etc/passwd", "passwd", (char *)0);
        int eb = errno;
        int c = execl("/tmp", "tmp", (char *)0);
        int ec = errno;
        printf("execfail %d %s %d %s %d %s\n", a, strerror(ea), b, strerror(eb), c, strerror(ec));
    } else if (!strcmp(mode, "efault")) {
        // Path arguments the runtime reads to spot /proc/self/exe: unmapped, unreadable, or
        // running into an unreadable page give EFAULT as natively, with the fault signals
        // unblocked and blocked; a path ending just before such a page is read whole.
        long page = sysconf(_SC_PAGESIZE);
        char *two = mmap(0, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (two == MAP_FAILED || mprotect(two + page, page, PROT_NONE)) return 2;
        static const char exe[] = "/proc/self/exe";
        char *runs_on = two + page - 4, *fits = two + page - sizeof exe;
        memcpy(runs_on, "/pro", 4);
        memcpy(fits, exe, sizeof exe);
        for (int blocked = 0; blocked < 2; blocked++) {
            sigset_t s;
            sigemptyset(&s);
            sigaddset(&s, SIGSEGV);
            sigaddset(&s, SIGBUS);
            sigprocmask(blocked ? SIG_BLOCK : SIG_UNBLOCK, &s, 0);
            struct stat st;
            char link[PATH_MAX];
            const char *bad[] = {(const char *)16, two + page, runs_on};
            for (int i = 0; i < 3; i++) {
                errno = 0;
                int a = open(bad[i], O_RDONLY), ea = errno;
                int b = stat(bad[i], &st), eb = errno;
                errno = 0;
                long c = readlink(bad[i], link, sizeof link), ec = errno;
                printf("efault %d %d: %d %s, %d %s, %ld %s\n", blocked, i, a, strerror(ea), b, strerror(eb), c, strerror(ec));
            }
            long n = readlink(fits, link, sizeof link - 1);
            char real[PATH_MAX];
            if (n < 0 || !realpath(argv[0], real)) return 3;
            link[n] = 0;
            printf("efault %d edge: %d\n", blocked, strcmp(link, real) == 0);
        }
    } else if (!strcmp(mode, "crash")) {
        printf("about to crash\n");
        fflush(stdout);
        crash_here((volatile int *)16);
    } else {
        fprintf(stderr, "unknown mode\n");
        return 64;
    }
    return 0;
}
