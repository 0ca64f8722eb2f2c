// Allocates 100 MiB and touches every page, sums with AVX2, reads a file
// from the rootfs, and exits 7.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((target("avx2"))) static long avx2_sum(const int *v, int n) {
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < n; i += 8)
        acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(v + i)));
    int out[8];
    _mm256_storeu_si256((__m256i *)out, acc);
    long s = 0;
    for (int i = 0; i < 8; i++) s += out[i];
    return s;
}

int main(int argc, char **argv) {
    size_t n = 100u << 20;
    unsigned char *p = malloc(n);
    if (!p) { perror("malloc"); return 1; }
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
    unsigned long check = 0;
    for (size_t i = 0; i < n; i += 4096) check += p[i];
    printf("touched %zu MiB, check %lu\n", n >> 20, check);
    int v[64];
    for (int i = 0; i < 64; i++) v[i] = i;
    printf("avx2 sum %ld\n", avx2_sum(v, 64));
    const char *path = argc > 1 ? argv[1] : "/etc/hello.txt";
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return 2; }
    char buf[256] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    printf("read %zu bytes: %s", got, buf);
    free(p);
    return 7;
}
