// The program's SIMD registers survive the engine's context switches: four threads keep
// values in xmm, ymm and (where the CPU has AVX-512) zmm registers across a million
// system calls and signals, and check them after each one.
#include <immintrin.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile long bad;

static void on_usr1(int sig) {
    (void)sig;
    // A handler that uses vector registers itself.
    __m128 junk = _mm_set1_ps(3.0f);
    __asm__ volatile("" ::"x"(junk));
}

__attribute__((target("avx512f"))) static int zmm_round(long v) {
    register __m512i z20 __asm__("zmm20") = _mm512_set1_epi64(v);
    __asm__ volatile("" : "+v"(z20));
    long r = syscall(SYS_getppid);
    __asm__ volatile("" : "+v"(z20));
    return r > 0 && _mm512_cmpneq_epi64_mask(z20, _mm512_set1_epi64(v)) == 0;
}

__attribute__((target("avx2"))) static int ymm_round(long v) {
    __m256i y = _mm256_set1_epi32((int)v);
    __m128i x = _mm_set1_epi16((short)v);
    __asm__ volatile("" : "+x"(y), "+x"(x));
    long r = syscall(SYS_getppid);
    __asm__ volatile("" : "+x"(y), "+x"(x));
    int same_y = _mm256_movemask_epi8(_mm256_cmpeq_epi32(y, _mm256_set1_epi32((int)v))) == -1;
    int same_x = _mm_movemask_epi8(_mm_cmpeq_epi16(x, _mm_set1_epi16((short)v))) == 0xffff;
    return r > 0 && same_y && same_x;
}

static void *work(void *arg) {
    long id = (long)arg;
    int ymm = __builtin_cpu_supports("avx2"), zmm = __builtin_cpu_supports("avx512f");
    for (long i = 0; i < 125000; i++) {
        long v = id * 1000003 + i;
        if ((ymm && !ymm_round(v)) || (zmm && !zmm_round(v))) bad++;
        if (i % 1000 == 0) kill(getpid(), SIGUSR1);
    }
    return NULL;
}

int main(void) {
    signal(SIGUSR1, on_usr1);
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("registers changed: %ld\n", bad);
    return bad != 0;
}
