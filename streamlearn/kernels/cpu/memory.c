/* ReLoop2's error compensation over the top-k ring in one call: the same arithmetic as
 * streamlearn/core/memory/error_memory.py (unit_rows, TopKStore.read, ErrorMemory.compensate), which runs
 * it as ~15 small torch ops per micro-batch. Python owns every buffer.
 *
 * For each query row: q = h / max(|h|, 1e-8); s_j = (q . key_j) / tau over the filled ring
 * slots; weights = softmax over the k largest s_j (over all when k = 0 or k >= filled);
 * [ybar | ybar_base] = sum_j w_j values_j; out = (1 - lam gamma) base + lam ybar
 * - lam (1 - gamma) ybar_base, then for probabilities clamped to [0, 1] and renormalised.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* The k largest similarities of a row, sorted by value, descending, ties in slot order (the
 * earlier slot first); a NaN sorts below every number, -0 as +0. Both selections below work
 * on one sortable 64-bit key per slot: the value's bits made order-preserving in the high
 * half, the slot inverted in the low half, so that no two keys tie and one signed comparison
 * orders them. */
#ifdef __AVX512F__
#define LANES 8
#else
#define LANES 4 /* AVX2's width: wider vectors it would split badly */
#endif
#define SMALL_K 16
typedef int64_t Keys __attribute__((vector_size(LANES * sizeof(int64_t))));

typedef float Floats __attribute__((vector_size(LANES * sizeof(float))));
typedef uint32_t Words __attribute__((vector_size(LANES * sizeof(uint32_t))));
typedef uint64_t Wide __attribute__((vector_size(LANES * sizeof(uint64_t))));

/* the sortable keys of similarities `value` at slots `slot`, a lane each; INT64_MIN is below
 * every one of them */
static inline Keys slot_keys(Floats value, Wide slot) {
    Words bits;
    memcpy(&bits, &value, sizeof bits);
    const Words magnitude = bits & 0x7FFFFFFFu;
    const Words negative = (Words)(bits > 0x7FFFFFFFu); /* all ones where the sign is set */
    Words ordered = (negative & ~bits) | (~negative & (bits | 0x80000000u));
    const Words zero = (Words)(magnitude == 0u); /* -0 as +0 */
    ordered = (zero & 0x80000000u) | (~zero & ordered);
    ordered &= ~(Words)(magnitude > 0x7F800000u); /* NaN: below -inf (0x007FFFFF) */
    const Wide high = __builtin_convertvector(ordered ^ 0x80000000u, Wide) << 32;
    return (Keys)(high | (0xFFFFFFFFu - slot));
}

/* LANES floats from `at`, the first `count` of them (the rest 0) */
static inline Floats load_floats(const float *at, int32_t count) {
    float padded[LANES] = {0};
    memcpy(padded, at, sizeof(float) * (size_t)count);
    Floats v;
    memcpy(&v, padded, sizeof v);
    return v;
}

/* keys: room for `filled` rounded up to LANES (the padding's keys are not read) */
static void sort_keys(const float *sim, int32_t filled, int64_t *keys) {
    Wide slot;
    for (int32_t i = 0; i < LANES; i++) slot[i] = (uint64_t)i;
    for (int32_t j = 0; j < filled; j += LANES, slot += LANES) {
        const int32_t count = filled - j < LANES ? filled - j : LANES;
        const Keys key = slot_keys(load_floats(sim + j, count), slot);
        memcpy(keys + j, &key, sizeof key);
    }
}

static inline int32_t key_slot(int64_t key) { return (int32_t)(0xFFFFFFFFu - (uint32_t)key); }

/* the similarities of slot_keys' keys, a lane each: the value back from the high half (-0 as
 * +0); NaN for a NaN's key and for INT64_MIN, so that nothing compares below it */
static inline Floats key_values(Keys key) {
    const Words ordered = __builtin_convertvector((Wide)key >> 32, Words) ^ 0x80000000u;
    const Words positive = (Words)(ordered > 0x7FFFFFFFu); /* all ones where the sign is clear */
    const Words bits = (positive & (ordered & 0x7FFFFFFFu)) | (~positive & ~ordered);
    Floats value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* whether any lane of a comparison's mask (all ones or all zeros per lane) is set: one
 * movemask where the vector width has one, which the compiler does not make of the loop */
static inline int any_lane(Words mask) {
#if LANES == 8 && defined(__AVX__)
    __m256 bits;
    memcpy(&bits, &mask, sizeof bits);
    return _mm256_movemask_ps(bits) != 0;
#elif LANES == 4 && defined(__SSE__)
    __m128 bits;
    memcpy(&bits, &mask, sizeof bits);
    return _mm_movemask_ps(bits) != 0;
#else
    uint32_t any = 0;
    for (int32_t i = 0; i < LANES; i++) any |= mask[i];
    return any != 0;
#endif
}

static inline Keys broadcast(int64_t value) {
    const Keys zero = {0};
    return zero + value;
}

#ifdef __AVX512F__ /* one instruction each, which the compiler does not make of the masks */
static inline Keys larger(Keys a, Keys b) {
    return (Keys)_mm512_max_epi64((__m512i)a, (__m512i)b);
}

static inline Keys smaller(Keys a, Keys b) {
    return (Keys)_mm512_min_epi64((__m512i)a, (__m512i)b);
}
#else
static inline Keys larger(Keys a, Keys b) {
    const Keys more = a > b; /* all ones where true */
    return (a & more) | (b & ~more);
}

static inline Keys smaller(Keys a, Keys b) {
    const Keys more = a > b;
    return (b & more) | (a & ~more);
}
#endif

/* k <= SMALL_K over a batch, LANES rows at a time, one lane per row. Wide keys: the ring is
 * read in blocks of SLOT_BLOCK slots: one product of a block's keys with the queries makes the
 * block's similarities [slots, rows] (gemm.h: each the same bits as in a product over the
 * whole ring), small enough to stay in the first-level cache while every group of rows reads
 * them. Each slot's keys pass down a chain of compare-exchanges with the `picked` largest so
 * far, which stay sorted (descending): no horizontal maximum, and a slot's chain overlaps the
 * next one's. Once `picked` are held, a slot whose similarity is at most the smallest held
 * one's in every lane skips the chain (its keys are smaller: an equal value's later slot is
 * below), which after the first slots is nearly every slot. The same keys as sort_keys, so the
 * same slots in the same order as select_insertion. Narrow keys: select_fused below. */
#define SLOT_BLOCK 128

/* the lanes of a group that hold rows (the first `lanes`): a padded lane's keys are never
 * read, so it must not keep a slot from being skipped */
static inline Words valid_lanes(int32_t lanes) {
    Words lane;
    for (int32_t i = 0; i < LANES; i++) lane[i] = (uint32_t)i;
    return (Words)(lane < (uint32_t)lanes);
}

/* a slot's similarities `scaled` (a lane per row) down the group's chain of the `picked`
 * largest keys `best`, unless no row's exceeds its smallest held one (`least`) */
static inline __attribute__((always_inline)) void offer_slot(Floats scaled, int32_t slot,
                                                             int32_t picked, Words valid,
                                                             Floats *least, Keys *best) {
    if (!any_lane(~(Words)(scaled <= *least) & valid)) return;
    const Wide zero = {0};
    Keys x = slot_keys(scaled, zero + (uint64_t)slot);
    for (int32_t t = 0; t < picked; t++) {
        const Keys kept = larger(best[t], x);
        x = smaller(best[t], x);
        best[t] = kept;
    }
    *least = key_values(best[picked - 1]);
}

/* one group's pass over a block (`count` slots from slot `first`, row n's similarity to the
 * block's slot j at block[j * rows + n]); `best`: the group's `picked` largest keys so far */
static inline __attribute__((always_inline)) void select_block(
    const float *block, int32_t count, int32_t first, int32_t rows, int32_t picked, float scale,
    int32_t n0, const int32_t lanes, Keys *best) {
    const Words valid = valid_lanes(lanes);
    Floats least = key_values(best[picked - 1]); /* NaN until picked are held */
    for (int32_t j = 0; j < count; j++)
        offer_slot(load_floats(block + (int64_t)j * rows + n0, lanes) * scale, first + j, picked,
                   valid, &least, best);
}

/* Narrow keys (hidden_dim <= FUSED_DIM, e.g. the neighbour vote's few numeric slots): a
 * group's similarities to each slot computed where they are compared, its queries held in
 * vector registers, with no block of products written and read back. The sums are gemm_acc's
 * to float32 rounding (the compiler may reorder a key's few products); a row's are the same
 * alone or in a batch, as there. DIM: hidden_dim, a constant once inlined. */
#define FUSED_DIM 16
static inline __attribute__((always_inline)) void select_fused(
    const int DIM, const float *ring_keys, int32_t filled, const float *queries_t, int32_t rows,
    int32_t picked, float scale, int32_t n0, int32_t lanes, Keys *best) {
    Floats q[FUSED_DIM];
    for (int p = 0; p < DIM; p++) q[p] = load_floats(queries_t + (int64_t)p * rows + n0, lanes);
    const Words valid = valid_lanes(lanes);
    Floats least = key_values(best[picked - 1]); /* NaN until picked are held */
    for (int32_t j = 0; j < filled; j++) {
        const float *key = ring_keys + (int64_t)j * DIM;
        Floats sim = {0};
        for (int p = 0; p < DIM; p++) sim += key[p] * q[p];
        offer_slot(sim * scale, j, picked, valid, &least, best);
    }
}

#define FUSED_CASE(D) \
    case D: \
        select_fused(D, ring_keys, filled, queries_t, rows, picked, scale, n0, lanes, best); \
        break;

/* select_fused for a group, dispatched to a copy compiled for its hidden_dim */
static void select_group_fused(int32_t hidden_dim, const float *ring_keys, int32_t filled,
                               const float *queries_t, int32_t rows, int32_t picked, float scale,
                               int32_t n0, int32_t lanes, Keys *best) {
    switch (hidden_dim) {
        FUSED_CASE(1) FUSED_CASE(2) FUSED_CASE(3) FUSED_CASE(4) FUSED_CASE(5) FUSED_CASE(6)
        FUSED_CASE(7) FUSED_CASE(8) FUSED_CASE(9) FUSED_CASE(10) FUSED_CASE(11) FUSED_CASE(12)
        FUSED_CASE(13) FUSED_CASE(14) FUSED_CASE(15) FUSED_CASE(16)
    }
}

/* `top`, `value`: [rows, picked], every row's chosen slots and their similarities times
 * `scale` (-0 as +0); `block`: room for SLOT_BLOCK * rows (wide keys), `best`: for SMALL_K keys a
 * group */
static void select_rows(const float *ring_keys, int32_t filled, int32_t hidden_dim,
                        const float *queries_t, int32_t rows, int32_t picked, float scale,
                        int32_t *top, float *value, float *block, Keys *best) {
    const int32_t groups = (rows + LANES - 1) / LANES, whole = rows / LANES;
    for (int32_t t = 0; t < groups * SMALL_K; t++) best[t] = broadcast(INT64_MIN);
    if (hidden_dim <= FUSED_DIM) {
        for (int32_t g = 0; g < groups; g++) {
            const int32_t n0 = g * LANES, lanes = rows - n0 < LANES ? rows - n0 : LANES;
            select_group_fused(hidden_dim, ring_keys, filled, queries_t, rows, picked, scale, n0,
                               lanes, best + g * SMALL_K);
        }
    } else {
        for (int32_t first = 0; first < filled; first += SLOT_BLOCK) {
            const int32_t count = filled - first < SLOT_BLOCK ? filled - first : SLOT_BLOCK;
            memset(block, 0, sizeof(float) * (size_t)count * (size_t)rows);
            gemm_acc(count, hidden_dim, rows, ring_keys + (int64_t)first * hidden_dim,
                     hidden_dim, queries_t, rows, block, rows);
            for (int32_t g = 0; g < whole; g++) /* whole groups: LANES a constant */
                select_block(block, count, first, rows, picked, scale, g * LANES, LANES,
                             best + g * SMALL_K);
            if (whole < groups)
                select_block(block, count, first, rows, picked, scale, whole * LANES,
                             rows - whole * LANES, best + whole * SMALL_K);
        }
    }
    for (int32_t g = 0; g < groups; g++) {
        const int32_t n0 = g * LANES, lanes = rows - n0 < LANES ? rows - n0 : LANES;
        for (int32_t t = 0; t < picked; t++) {
            const Keys key = best[g * SMALL_K + t];
            const Floats chosen = key_values(key);
            for (int32_t i = 0; i < lanes; i++) {
                top[(int64_t)(n0 + i) * picked + t] = key_slot(key[i]);
                value[(int64_t)(n0 + i) * picked + t] = chosen[i];
            }
        }
    }
}

/* Larger k (its chain of vectors would not stay in registers), one row at a time: insertion
 * into a list kept sorted; once k are held, a key must beat the smallest of them. `held`:
 * room for k keys. */
static void select_insertion(const int64_t *keys, int32_t filled, int32_t picked, int32_t *top,
                             int64_t *held) {
    int32_t count = 0;
    for (int32_t j = 0; j < filled; j++) {
        const int64_t key = keys[j];
        if (count == picked && key < held[picked - 1]) continue;
        int32_t at = count < picked ? count++ : picked - 1;
        for (; at > 0 && key > held[at - 1]; at--) held[at] = held[at - 1];
        held[at] = key;
    }
    for (int32_t t = 0; t < picked; t++) top[t] = key_slot(held[t]);
}

/* Returns 0, or -2 when scratch could not be allocated (nothing written). */
int memory_compensate(const float *ring_keys, const float *ring_values, int32_t filled,
                      int32_t hidden_dim, int32_t width, const float *hidden, const float *base,
                      int32_t rows, int32_t k, float tau, float lam, float gamma,
                      int32_t regression, float *out, float *keys_out) {
    const int all = k <= 0 || k >= filled;
    const int32_t picked = all ? filled : k;
    /* k <= SMALL_K: select_rows picks every row's slots from the ring a block at a time;
     * otherwise every row's similarities [filled, rows] come from one product of the ring's
     * keys with the queries, and each row's are gathered for the sortable keys */
    const int grouped = !all && picked <= SMALL_K;
    /* scratch: the chosen ones' similarities (every row's when grouped), the weighted means,
     * the unit queries transposed [hidden_dim, rows], then a block's similarities (grouped,
     * wide keys; narrow ones need none) or one row's and every row's */
    const size_t chosen_size = (size_t)picked * (grouped ? (size_t)rows : 1);
    const size_t block = hidden_dim <= FUSED_DIM ? 0 : (size_t)SLOT_BLOCK * (size_t)rows;
    const size_t scratch = chosen_size + 2 * (size_t)width + (size_t)hidden_dim * (size_t)rows +
                           (grouped ? block : (size_t)filled * (1 + (size_t)rows));
    float *chosen = malloc(sizeof(float) * scratch);
    /* each row's chosen slots: one row's at a time, or every row's for select_rows */
    int32_t *top = malloc(sizeof(int32_t) * (picked > 0 ? chosen_size : 1));
    /* grouped: each group's largest keys; else the sortable keys, then the insertion's held
     * list */
    const size_t key_count = grouped ? (size_t)SMALL_K * LANES * ((size_t)rows / LANES + 1)
                                     : (size_t)filled + LANES + (size_t)picked;
    int64_t *keys = aligned_alloc(64, sizeof(int64_t) * ((key_count + 7) / 8 * 8));
    if (!chosen || !top || !keys) {
        free(chosen);
        free(top);
        free(keys);
        return -2;
    }
    float *mean = chosen + chosen_size, *queries_t = mean + 2 * width;
    float *sim = queries_t + (int64_t)hidden_dim * rows; /* a block's, or one row's */
    float *sims = grouped ? NULL : sim + filled;          /* every row's */
    for (int32_t n = 0; n < rows; n++)
        unit_row(hidden + (int64_t)n * hidden_dim, hidden_dim, keys_out + (int64_t)n * hidden_dim);
    transpose(keys_out, rows, hidden_dim, hidden_dim, queries_t);
    if (grouped) {
        select_rows(ring_keys, filled, hidden_dim, queries_t, rows, picked, 1.0f / tau, top,
                    chosen, sim, (Keys *)keys);
    } else {
        memset(sims, 0, sizeof(float) * (size_t)filled * (size_t)rows);
        gemm_acc(filled, hidden_dim, rows, ring_keys, hidden_dim, queries_t, rows, sims, rows);
    }
    for (int32_t n = 0; n < rows; n++) {
        int32_t *slots = grouped ? top + (int64_t)n * picked : top; /* row n's */
        float *weight = grouped ? chosen + (int64_t)n * picked : chosen;
        if (!grouped) {
            if (all) {
                for (int32_t j = 0; j < filled; j++) slots[j] = j;
            } else { /* row n's similarities side by side, for the sortable keys */
                for (int32_t j = 0; j < filled; j++)
                    sim[j] = sims[(int64_t)j * rows + n] * (1.0f / tau);
                sort_keys(sim, filled, keys);
                select_insertion(keys, filled, picked, slots, keys + filled + LANES);
            }
            for (int32_t t = 0; t < picked; t++) /* the chosen slots' only: where they lie */
                weight[t] = sims[(int64_t)slots[t] * rows + n] * (1.0f / tau);
        }
        float peak = -INFINITY, total = 0.0f;
        for (int32_t t = 0; t < picked; t++) peak = weight[t] > peak ? weight[t] : peak;
        memset(mean, 0, sizeof(float) * 2 * (size_t)width);
        for (int32_t t = 0; t < picked; t++) /* each weight's exponential, once */
            total += (weight[t] = expf(weight[t] - peak));
        for (int32_t t = 0; t < picked; t++) {
            const float w = weight[t] / total;
            const float *v = ring_values + (int64_t)slots[t] * 2 * width;
            for (int32_t i = 0; i < 2 * width; i++) mean[i] += w * v[i];
        }
        const float *b = base + (int64_t)n * width;
        float *o = out + (int64_t)n * width, sum = 0.0f;
        for (int32_t i = 0; i < width; i++) {
            float value = (1.0f - lam * gamma) * b[i] + lam * mean[i] -
                          lam * (1.0f - gamma) * mean[width + i];
            if (!regression) value = value < 0.0f ? 0.0f : value > 1.0f ? 1.0f : value;
            o[i] = value;
            sum += value;
        }
        if (!regression) {
            sum = sum < 1e-12f ? 1e-12f : sum;
            for (int32_t i = 0; i < width; i++) o[i] /= sum;
        }
    }
    free(chosen);
    free(top);
    free(keys);
    return 0;
}

/* ErrorMemory.update's writes into the top-k ring (store "all"): row n of the batch goes to
 * slot (cursor + n) % size with its unit key and the values [y | base] (y one-hot over the
 * width class slots, or the regression target), and, where ring_num is not NULL, its raw
 * inputs to the rings mirrored slot for slot (MemoryStage's, for re-keying). Rows beyond the
 * last `size` would be overwritten within the batch: callers pass at most size rows. Returns
 * 0, or -3 when a class label lies outside [0, width) (nothing written). */
int memory_store(float *ring_keys, float *ring_values, int64_t size, int64_t cursor,
                 int32_t hidden_dim, int32_t width, const float *hidden, const int64_t *labels,
                 const double *targets, const float *base, int64_t rows, float *ring_num,
                 int64_t *ring_cat, const float *num, const int64_t *cat, int32_t num_dim,
                 int32_t cat_dim) {
    if (labels)
        for (int64_t n = 0; n < rows; n++)
            if (labels[n] < 0 || labels[n] >= width) return -3;
    for (int64_t n = 0; n < rows; n++) {
        const int64_t slot = (cursor + n) % size;
        unit_row(hidden + n * hidden_dim, hidden_dim, ring_keys + slot * hidden_dim);
        float *v = ring_values + slot * 2 * width;
        if (labels) {
            memset(v, 0, sizeof(float) * (size_t)width);
            v[labels[n]] = 1.0f;
        } else {
            v[0] = (float)targets[n];
        }
        memcpy(v + width, base + n * width, sizeof(float) * (size_t)width);
        if (ring_num) {
            memcpy(ring_num + slot * num_dim, num + n * num_dim, sizeof(float) * (size_t)num_dim);
            memcpy(ring_cat + slot * cat_dim, cat + n * cat_dim, sizeof(int64_t) * (size_t)cat_dim);
        }
    }
    return 0;
}
