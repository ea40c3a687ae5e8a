/* The matrix and row kernels step.c and memory.c share (static: each file gets
 * its own inlinable copy). */
#ifndef STREAMLEARN_KERNELS_GEMM_H
#define STREAMLEARN_KERNELS_GEMM_H

#include <math.h>
#include <stdint.h>

/* C[M, N] += A[M, K] . B[K, N], row-major with row strides lda, ldb, ldc. Blocks of rows by
 * 32 columns accumulate in fixed-size locals the compiler keeps in vector registers (8 rows
 * where AVX-512's 32 registers are there, 4 rows in AVX2's 16), so each loaded row of B feeds
 * that many rows of FMAs; the edges take one row at a time, skipping zero multipliers (ReLU
 * zeros, unset inputs). Every element sums over k in order either way: the same results. */
#ifdef __AVX512F__
#define BLOCK_ROWS 8
#else
#define BLOCK_ROWS 4
#endif
#define BLOCK_COLS 32
static void gemm_acc(int64_t M, int64_t K, int64_t N, const float *restrict A, int64_t lda,
                     const float *restrict B, int64_t ldb, float *restrict C, int64_t ldc) {
    const int64_t n_blocked = N - N % BLOCK_COLS;
    int64_t m = 0;
    for (; m + BLOCK_ROWS <= M; m += BLOCK_ROWS)
        for (int64_t n = 0; n < n_blocked; n += BLOCK_COLS) {
            float acc[BLOCK_ROWS][BLOCK_COLS];
            for (int r = 0; r < BLOCK_ROWS; r++)
                for (int t = 0; t < BLOCK_COLS; t++) acc[r][t] = C[(m + r) * ldc + n + t];
            for (int64_t k = 0; k < K; k++) {
                const float *b = B + k * ldb + n;
                for (int r = 0; r < BLOCK_ROWS; r++) {
                    const float a = A[(m + r) * lda + k];
                    for (int t = 0; t < BLOCK_COLS; t++) acc[r][t] += a * b[t];
                }
            }
            for (int r = 0; r < BLOCK_ROWS; r++)
                for (int t = 0; t < BLOCK_COLS; t++) C[(m + r) * ldc + n + t] = acc[r][t];
        }
    for (int64_t row = 0; row < M; row++) { /* what the blocks left: edge rows, edge columns */
        const int64_t from = row < m ? n_blocked : 0;
        if (from == N) continue;
        float *c = C + row * ldc;
        for (int64_t k = 0; k < K; k++) {
            const float a = A[row * lda + k], *b = B + k * ldb;
            if (a == 0.0f) continue;
            for (int64_t n = from; n < N; n++) c[n] += a * b[n];
        }
    }
}

/* dst[j, i] = src[i, j]: src is [rows, cols] with row stride lds */
static void transpose(const float *restrict src, int64_t rows, int64_t cols, int64_t lds,
                      float *restrict dst) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * rows + i] = src[i * lds + j];
}

/* q = h / max(|h|, 1e-8), as learn/memory.py's unit_rows (q may be h itself): a unit key */
static void unit_row(const float *h, int32_t hidden_dim, float *q) {
    float norm = 0.0f;
    for (int32_t i = 0; i < hidden_dim; i++) norm += h[i] * h[i];
    norm = sqrtf(norm);
    norm = norm < 1e-8f ? 1e-8f : norm;
    for (int32_t i = 0; i < hidden_dim; i++) q[i] = h[i] / norm;
}

#endif
