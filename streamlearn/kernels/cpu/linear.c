/* A classifier's linear model beside the network (streamlearn/core/linear.py) at its SGD
 * rates: the arithmetic of kernels/reference/linear.py (NumpyLinear), one call per micro-batch
 * for the rates' predictions and their mix, one for their losses and SGD steps, where numpy
 * takes dozens of calls. Python owns every buffer.
 *
 * Each rate's weights are float32 [numeric_slots + buckets + 1, width]: a row per numeric
 * slot, a row per categorical bucket (bucket 0, a missing value, is never read or written),
 * then the bias; the rates' lie one after another (`rates` blocks of that size). Rows of num
 * and cat may lie any distance apart (a prefix of the slots: the ones in use). Both calls
 * check every bucket and class before they read or write. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BAD_BUCKET (-3) /* as step.c's STEP_BAD_BUCKET */
#define BAD_CLASS (-5)  /* as step.c's STEP_BAD_CLASS */

static int buckets_ok(const int64_t *cat, int64_t cat_stride, int32_t cat_cols, int64_t rows,
                      int64_t buckets) {
    for (int64_t n = 0; n < rows; n++)
        for (int32_t s = 0; s < cat_cols; s++) {
            const int64_t bucket = cat[n * cat_stride + s];
            if (bucket < 0 || bucket >= buckets) return 0;
        }
    return 1;
}

/* linear [rows, width]: softmax over the first `active` slots of bias + num . numeric rows +
 * the rows' bucket rows (zero elsewhere; all zero with none active); buckets checked. */
static void predict_one(const float *weights, int32_t width, int64_t numeric_slots,
                        int64_t buckets, const float *num, int64_t num_stride, int32_t num_cols,
                        const int64_t *cat, int64_t cat_stride, int32_t cat_cols, int64_t rows,
                        int32_t active, float *linear) {
    const float *bucket_rows = weights + numeric_slots * width;
    const float *bias = weights + (numeric_slots + buckets) * width;
    for (int64_t n = 0; n < rows; n++) {
        float *l = linear + n * width;
        memset(l, 0, sizeof(float) * (size_t)width);
        if (active == 0) continue;
        memcpy(l, bias, sizeof(float) * (size_t)active);
        const float *x = num + n * num_stride;
        for (int32_t d = 0; d < num_cols; d++) {
            const float v = x[d];
            const float *w = weights + (int64_t)d * width;
            if (v != 0.0f)
                for (int32_t c = 0; c < active; c++) l[c] += v * w[c];
        }
        const int64_t *b = cat + n * cat_stride;
        for (int32_t s = 0; s < cat_cols; s++) {
            if (b[s] == 0) continue;
            const float *w = bucket_rows + b[s] * width;
            for (int32_t c = 0; c < active; c++) l[c] += w[c];
        }
        float peak = l[0], total = 0.0f;
        for (int32_t c = 1; c < active; c++) peak = l[c] > peak ? l[c] : peak;
        for (int32_t c = 0; c < active; c++) total += (l[c] = expf(l[c] - peak));
        for (int32_t c = 0; c < active; c++) l[c] /= total;
    }
}

/* One SGD step in place: with step = lr (onehot(target) - linear) over the first `active`
 * slots, every row adds step x to the numeric rows, step to the bias and to its buckets' rows
 * (the log loss's gradient summed over the rows, all taken from `linear`, the predictions
 * made before the step); buckets and targets checked. */
static void learn_one(float *weights, int32_t width, int64_t numeric_slots, int64_t buckets,
                      const float *num, int64_t num_stride, int32_t num_cols, const int64_t *cat,
                      int64_t cat_stride, int32_t cat_cols, int64_t rows, int32_t active,
                      const int64_t *target, const float *linear, float lr) {
    float *bucket_rows = weights + numeric_slots * width;
    float *bias = weights + (numeric_slots + buckets) * width;
    float step[active > 0 ? active : 1];
    for (int64_t n = 0; n < rows; n++) {
        const float *l = linear + n * width;
        for (int32_t c = 0; c < active; c++) step[c] = -lr * l[c];
        step[target[n]] += lr;
        const float *x = num + n * num_stride;
        for (int32_t d = 0; d < num_cols; d++) {
            const float v = x[d];
            float *w = weights + (int64_t)d * width;
            if (v != 0.0f)
                for (int32_t c = 0; c < active; c++) w[c] += v * step[c];
        }
        for (int32_t c = 0; c < active; c++) bias[c] += step[c];
        const int64_t *b = cat + n * cat_stride;
        for (int32_t s = 0; s < cat_cols; s++) {
            if (b[s] == 0) continue;
            float *w = bucket_rows + b[s] * width;
            for (int32_t c = 0; c < active; c++) w[c] += step[c];
        }
    }
}

/* each [rates, rows, width]: every rate's probabilities (predict_one), and mixed [rows, width]
 * = sum over the rates of share[r] * each[r] (float32, in rate order). Returns 0 or BAD_BUCKET
 * (nothing written). */
int linear_predict(const float *weights, int32_t rates, int32_t width, int64_t numeric_slots,
                   int64_t buckets, const double *shares, const float *num, int64_t num_stride,
                   int32_t num_cols, const int64_t *cat, int64_t cat_stride, int32_t cat_cols,
                   int64_t rows, int32_t active, float *each, float *mixed) {
    if (!buckets_ok(cat, cat_stride, cat_cols, rows, buckets)) return BAD_BUCKET;
    const int64_t rate_size = (numeric_slots + buckets + 1) * width, cells = rows * width;
    for (int32_t r = 0; r < rates; r++) {
        float *own = each + r * cells;
        predict_one(weights + r * rate_size, width, numeric_slots, buckets, num, num_stride,
                    num_cols, cat, cat_stride, cat_cols, rows, active, own);
        const float share = (float)shares[r];
        if (r == 0)
            for (int64_t i = 0; i < cells; i++) mixed[i] = share * own[i];
        else
            for (int64_t i = 0; i < cells; i++) mixed[i] += share * own[i];
    }
    return 0;
}

/* Every rate's discounted log loss over the rows, loss[r] = fade * loss[r] - sum of
 * log max(each[r][n][target[n]], 1e-7), then its SGD step (learn_one, at lrs[r]) on its own
 * prediction each[r]. Returns 0, BAD_BUCKET or BAD_CLASS (a target outside [0, active)),
 * nothing written then. */
int linear_learn(float *weights, int32_t rates, int32_t width, int64_t numeric_slots,
                 int64_t buckets, const float *lrs, const float *num, int64_t num_stride,
                 int32_t num_cols, const int64_t *cat, int64_t cat_stride, int32_t cat_cols,
                 int64_t rows, int32_t active, const int64_t *target, const float *each,
                 double *loss, double fade) {
    if (!buckets_ok(cat, cat_stride, cat_cols, rows, buckets)) return BAD_BUCKET;
    for (int64_t n = 0; n < rows; n++)
        if (target[n] < 0 || target[n] >= active) return BAD_CLASS;
    const int64_t rate_size = (numeric_slots + buckets + 1) * width, cells = rows * width;
    for (int32_t r = 0; r < rates; r++) {
        const float *own = each + r * cells;
        double total = 0.0;
        for (int64_t n = 0; n < rows; n++) {
            const double hit = own[n * width + target[n]];
            total += log(hit < 1e-7 ? 1e-7 : hit); /* NaN stays NaN */
        }
        loss[r] = fade * loss[r] - total;
        learn_one(weights + r * rate_size, width, numeric_slots, buckets, num, num_stride,
                  num_cols, cat, cat_stride, cat_cols, rows, active, target, own, lrs[r]);
    }
    return 0;
}
