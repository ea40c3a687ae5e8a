/* FeatureEncoder.standardize and .observe (streamlearn/core/features.py), one pass each: numpy's
 * forms cost ~10 and ~20 small array ops per micro-batch. The same float64 operations in the
 * same order (a true division, no reciprocal; sums over rows in row order, as numpy reduces
 * the encoder's batch along its first axis), so the results equal numpy's bit for bit; only
 * a batch with missing values gets its sums in another order than numpy's masked form (equal
 * to rounding). This file opts out of the library's reassociation and of fused multiply-adds
 * to keep the order. */
#if defined(__clang__)
#pragma clang fp contract(off) reassociate(off)
#elif defined(__GNUC__)
#pragma GCC optimize("no-associative-math", "fp-contract=off")
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CLIP 8.0
#define BLOCK 64 /* columns whose scales are kept on the stack at a time */

/* For the first `used` of `slots` columns: std = sqrt(m2 / max(count - 1, 1)), 1 where it
 * is <= 1e-12; z = clip((x - mean) / std, -8, 8), 0 where x is missing (NaN). The other
 * columns are 0. */
void features_standardize(const double *num, int64_t rows, int64_t slots, int64_t used,
                          const double *count, const double *mean, const double *m2,
                          float *out) {
    for (int64_t n = 0; n < rows; n++)
        memset(out + n * slots + used, 0, sizeof(float) * (size_t)(slots - used));
    double scale[BLOCK];
    for (int64_t from = 0; from < used; from += BLOCK) {
        const int64_t width = used - from < BLOCK ? used - from : BLOCK;
        for (int64_t j = 0; j < width; j++) {
            const double dof = count[from + j] - 1.0, std = sqrt(m2[from + j] / (dof > 1.0 ? dof : 1.0));
            scale[j] = std <= 1e-12 ? 1.0 : std;
        }
        for (int64_t n = 0; n < rows; n++) {
            const double *x = num + n * slots + from;
            float *z = out + n * slots + from;
            for (int64_t j = 0; j < width; j++) {
                const double v = (x[j] - mean[from + j]) / scale[j];
                z[j] = (float)(isnan(v) ? 0.0 : v > CLIP ? CLIP : v < -CLIP ? -CLIP : v);
            }
        }
    }
}

/* Chan et al.'s parallel update of (count, mean, m2) with the batch's present (non-NaN)
 * values, for each of the first `used` of `slots` columns that has any: batch mean and sum of
 * squared deviations, then mean += delta n_b / total, m2 += m2_b + delta^2 n_a n_b / total.
 * A column whose m2 would overflow keeps its statistics; returns how many did. */
int64_t features_observe(const double *num, int64_t rows, int64_t slots, int64_t used,
                         double *count, double *mean, double *m2) {
    double sum[BLOCK], sq[BLOCK], seen[BLOCK], batch_mean[BLOCK];
    int64_t overflowed = 0;
    for (int64_t from = 0; from < used; from += BLOCK) {
        const int64_t width = used - from < BLOCK ? used - from : BLOCK;
        memset(sum, 0, sizeof(sum));
        memset(sq, 0, sizeof(sq));
        memset(seen, 0, sizeof(seen));
        for (int64_t n = 0; n < rows; n++) {
            const double *x = num + n * slots + from;
            for (int64_t j = 0; j < width; j++)
                if (!isnan(x[j])) sum[j] += x[j], seen[j] += 1.0;
        }
        for (int64_t j = 0; j < width; j++) batch_mean[j] = sum[j] / seen[j];
        for (int64_t n = 0; n < rows; n++) {
            const double *x = num + n * slots + from;
            for (int64_t j = 0; j < width; j++)
                if (!isnan(x[j])) {
                    const double d = x[j] - batch_mean[j];
                    sq[j] += d * d;
                }
        }
        for (int64_t j = 0; j < width; j++) {
            if (seen[j] == 0.0) continue;
            const int64_t c = from + j;
            const double n_a = count[c], total = n_a + seen[j];
            const double delta = batch_mean[j] - mean[c], frac = seen[j] / total;
            const double next_m2 = m2[c] + (sq[j] + delta * delta * n_a * frac);
            if (!isfinite(next_m2)) {
                overflowed++;
                continue;
            }
            mean[c] = mean[c] + delta * frac;
            m2[c] = next_m2;
            count[c] = total;
        }
    }
    return overflowed;
}
