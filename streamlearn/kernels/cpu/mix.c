/* The small per-batch arithmetic of mixing two predictions, which numpy runs as several calls
 * of a few microseconds each for a batch of a few rows: core/hedge.py's evidence (the rows
 * each prediction's arg max gets right) and core/memory/compensation.py's gated mix. The same
 * results as those numpy expressions, bit for bit. */
#include <math.h>
#include <stdint.h>

/* numpy's argmax of a row: the first largest value, or the first NaN where there is one */
static int32_t row_argmax(const float *row, int32_t width) {
    int32_t best = 0;
    for (int32_t i = 0; i < width; i++) {
        if (isnan(row[i])) return i;
        if (row[i] > row[best]) best = i;
    }
    return best;
}

/* Rows whose `second` [rows, width] arg max is their class slot `target` minus those whose
 * `first` one is. */
int64_t hedge_hits(const int64_t *target, const float *first, const float *second, int64_t rows,
                   int32_t width) {
    int64_t gain = 0;
    for (int64_t n = 0; n < rows; n++) {
        gain += row_argmax(second + n * width, width) == target[n];
        gain -= row_argmax(first + n * width, width) == target[n];
    }
    return gain;
}

/* out = (1 - weight) base + weight compensated, elementwise over `count`, each product
 * rounded to float32 before the sum as numpy's expression rounds it (no fused multiply-add:
 * the gated mix is the same value wherever it is computed, the serving tier's numpy
 * included). */
__attribute__((optimize("fp-contract=off"))) void mix_gated(const float *base,
                                                             const float *compensated,
                                                             int64_t count, float weight,
                                                             float *out) {
    const float keep = 1.0f - weight;
    for (int64_t i = 0; i < count; i++) out[i] = keep * base[i] + weight * compensated[i];
}
