/* The matrix and row kernels step.c and memory.c share (static: each file gets
 * its own inlinable copy). */
#ifndef STREAMLEARN_KERNELS_GEMM_H
#define STREAMLEARN_KERNELS_GEMM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* C[M, N] += A[M, K] . B[K, N], row-major with row strides lda, ldb, ldc, in tiles of rows by
 * two (then one) vectors of columns whose sums stay in vector registers for the whole of k:
 * each loaded vector of B feeds a multiply-add for every row of the tile, and no partial sum
 * goes back to memory. TILE_ROWS fills the vector registers (16 of them: 12 sums, 2 of B, a
 * broadcast; AVX-512's 32 take 24 sums); columns left over (fewer than a vector) go through
 * the same tile on a zero-padded copy, in chunks of k. Every element sums its k terms in
 * order, from C's own value, one multiply-add at a time (fused where the target has FMA),
 * whatever the shapes: a row gives the same result alone or in a batch, bit for bit. */
#if defined(__AVX__)
#define GEMM_LANES 8
#else
#define GEMM_LANES 4 /* SSE's (or NEON's) vectors */
#endif
typedef float Lanes __attribute__((vector_size(GEMM_LANES * sizeof(float))));
#if defined(__AVX512F__)
#define TILE_ROWS 12
#else
#define TILE_ROWS 6
#endif
#define PAD_K 256 /* k per chunk of the left-over columns' padded copy */

static inline Lanes load_lanes(const float *p) {
    Lanes v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_lanes(float *p, Lanes v) { memcpy(p, &v, sizeof v); }

/* rows [0, R) by columns [0, GEMM_LANES V) of C (R <= TILE_ROWS, V <= 2; constants once inlined) */
static inline __attribute__((always_inline)) void gemm_tile(const int R, const int V, int64_t K,
                                                            const float *restrict A, int64_t lda,
                                                            const float *restrict B, int64_t ldb,
                                                            float *restrict C, int64_t ldc) {
    Lanes sum[TILE_ROWS][2];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) sum[r][v] = load_lanes(C + r * ldc + GEMM_LANES * v);
    for (int64_t k = 0; k < K; k++) {
        Lanes b[2];
        for (int v = 0; v < V; v++) b[v] = load_lanes(B + k * ldb + GEMM_LANES * v);
        for (int r = 0; r < R; r++) {
            const float a = A[r * lda + k];
            for (int v = 0; v < V; v++) sum[r][v] += a * b[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) store_lanes(C + r * ldc + GEMM_LANES * v, sum[r][v]);
}

#define GEMM_TILE_CASE(R, V) \
    case R: \
        gemm_tile(R, V, K, A, lda, B, ldb, C, ldc); \
        break;
#if TILE_ROWS == 12
#define GEMM_TILE_CASES(V) \
    GEMM_TILE_CASE(1, V) GEMM_TILE_CASE(2, V) GEMM_TILE_CASE(3, V) GEMM_TILE_CASE(4, V) \
    GEMM_TILE_CASE(5, V) GEMM_TILE_CASE(6, V) GEMM_TILE_CASE(7, V) GEMM_TILE_CASE(8, V) \
    GEMM_TILE_CASE(9, V) GEMM_TILE_CASE(10, V) GEMM_TILE_CASE(11, V) GEMM_TILE_CASE(12, V)
#else
#define GEMM_TILE_CASES(V) \
    GEMM_TILE_CASE(1, V) GEMM_TILE_CASE(2, V) GEMM_TILE_CASE(3, V) GEMM_TILE_CASE(4, V) \
    GEMM_TILE_CASE(5, V) GEMM_TILE_CASE(6, V)
#endif

/* R rows by GEMM_LANES V columns, R a run-time count dispatched to a tile compiled for it */
static void gemm_rows(int R, int V, int64_t K, const float *restrict A, int64_t lda,
                      const float *restrict B, int64_t ldb, float *restrict C, int64_t ldc) {
    if (V == 2) {
        switch (R) { GEMM_TILE_CASES(2) }
    } else {
        switch (R) { GEMM_TILE_CASES(1) }
    }
}

static void gemm_acc(int64_t M, int64_t K, int64_t N, const float *restrict A, int64_t lda,
                     const float *restrict B, int64_t ldb, float *restrict C, int64_t ldc) {
    const int64_t wide = N - N % GEMM_LANES; /* columns the tiles take as they lie */
    for (int64_t m = 0; m < M; m += TILE_ROWS) {
        const int R = (int)(M - m < TILE_ROWS ? M - m : TILE_ROWS);
        int64_t n = 0;
        for (; n + 2 * GEMM_LANES <= wide; n += 2 * GEMM_LANES)
            gemm_rows(R, 2, K, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc);
        if (n < wide) gemm_rows(R, 1, K, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc);
    }
    const int64_t left = N - wide;
    if (!left) return;
    float panel[PAD_K * GEMM_LANES], sums[TILE_ROWS * GEMM_LANES];
    for (int64_t k0 = 0; k0 < K; k0 += PAD_K) {
        const int64_t kc = K - k0 < PAD_K ? K - k0 : PAD_K;
        for (int64_t k = 0; k < kc; k++) {
            memset(panel + k * GEMM_LANES, 0, sizeof(float) * GEMM_LANES);
            memcpy(panel + k * GEMM_LANES, B + (k0 + k) * ldb + wide, sizeof(float) * (size_t)left);
        }
        for (int64_t m = 0; m < M; m += TILE_ROWS) {
            const int R = (int)(M - m < TILE_ROWS ? M - m : TILE_ROWS);
            memset(sums, 0, sizeof sums);
            for (int r = 0; r < R; r++)
                memcpy(sums + r * GEMM_LANES, C + (m + r) * ldc + wide, sizeof(float) * (size_t)left);
            gemm_rows(R, 1, kc, A + m * lda + k0, lda, panel, GEMM_LANES, sums, GEMM_LANES);
            for (int r = 0; r < R; r++)
                memcpy(C + (m + r) * ldc + wide, sums + r * GEMM_LANES, sizeof(float) * (size_t)left);
        }
    }
}

/* dst[j, i] = src[i, j]: src is [rows, cols] with row stride lds. In tiles of TILE x TILE:
 * element by element, a long src's column lands in dst rows far apart, each write touching
 * another cache line (a micro-batch of 256 rows or more took three times as long) */
#define TILE 16
static void transpose(const float *restrict src, int64_t rows, int64_t cols, int64_t lds,
                      float *restrict dst) {
    for (int64_t i0 = 0; i0 < rows; i0 += TILE) {
        const int64_t i1 = i0 + TILE < rows ? i0 + TILE : rows;
        for (int64_t j0 = 0; j0 < cols; j0 += TILE) {
            const int64_t j1 = j0 + TILE < cols ? j0 + TILE : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++) dst[j * rows + i] = src[i * lds + j];
        }
    }
}
#undef TILE

/* q = h / max(|h|, 1e-8), as learn/memory.py's unit_rows (q may be h itself): a unit key */
static void unit_row(const float *h, int32_t hidden_dim, float *q) {
    float norm = 0.0f;
    for (int32_t i = 0; i < hidden_dim; i++) norm += h[i] * h[i];
    norm = sqrtf(norm);
    norm = norm < 1e-8f ? 1e-8f : norm;
    for (int32_t i = 0; i < hidden_dim; i++) q[i] = h[i] / norm;
}

#endif
