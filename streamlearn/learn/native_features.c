/* FeatureEncoder.standardize (streamlearn/features.py) in one pass: numpy's form costs ~10
 * small array ops per micro-batch. The same float64 arithmetic in the same order (a true
 * division, no reciprocal), so the float32 results equal numpy's bit for bit.
 *
 * For the first `used` of `slots` columns: std = sqrt(m2 / max(count - 1, 1)), 1 where it
 * is <= 1e-12; z = clip((x - mean) / std, -8, 8), 0 where x is missing (NaN). The other
 * columns are 0. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CLIP 8.0
#define BLOCK 64 /* columns whose scales are kept on the stack at a time */

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
