/* ReLoop2's error compensation over the top-k ring in one call: the same arithmetic as
 * streamlearn/learn/memory.py (unit_rows, TopKStore.read, ErrorMemory.compensate), which runs
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

/* Returns 0, or -2 when scratch could not be allocated (nothing written). */
int memory_compensate(const float *ring_keys, const float *ring_values, int32_t filled,
                      int32_t hidden_dim, int32_t width, const float *hidden, const float *base,
                      int32_t rows, int32_t k, float tau, float lam, float gamma,
                      int32_t regression, float *out, float *keys_out) {
    const int all = k <= 0 || k >= filled;
    const int32_t picked = all ? filled : k;
    /* scratch: similarities, the weighted means, the ring's keys transposed [hidden_dim,
     * filled] so each row's similarities accumulate along contiguous, vectorised rows */
    float *sim = malloc(sizeof(float) * ((size_t)filled * (1 + (size_t)hidden_dim) + 2 * width));
    int32_t *top = malloc(sizeof(int32_t) * (size_t)(picked > 0 ? picked : 1));
    if (!sim || !top) {
        free(sim);
        free(top);
        return -2;
    }
    float *mean = sim + filled, *keys_t = mean + 2 * width;
    for (int32_t j = 0; j < filled; j++)
        for (int32_t i = 0; i < hidden_dim; i++)
            keys_t[(int64_t)i * filled + j] = ring_keys[(int64_t)j * hidden_dim + i];
    for (int32_t n = 0; n < rows; n++) {
        const float *h = hidden + (int64_t)n * hidden_dim;
        float *q = keys_out + (int64_t)n * hidden_dim;
        float norm = 0.0f;
        for (int32_t i = 0; i < hidden_dim; i++) norm += h[i] * h[i];
        norm = sqrtf(norm);
        norm = norm < 1e-8f ? 1e-8f : norm;
        for (int32_t i = 0; i < hidden_dim; i++) q[i] = h[i] / norm;
        memset(sim, 0, sizeof(float) * (size_t)filled);
        for (int32_t i = 0; i < hidden_dim; i++) {
            const float qi = q[i], *column = keys_t + (int64_t)i * filled;
            if (qi == 0.0f) continue;
            for (int32_t j = 0; j < filled; j++) sim[j] += qi * column[j];
        }
        for (int32_t j = 0; j < filled; j++) sim[j] *= 1.0f / tau;
        /* the k largest, kept sorted descending by insertion (k is small) */
        int32_t count = 0;
        for (int32_t j = 0; j < filled; j++) {
            if (!all && count == picked && !(sim[j] > sim[top[picked - 1]])) continue;
            int32_t at = count < picked ? count++ : picked - 1;
            while (!all && at > 0 && sim[j] > sim[top[at - 1]]) {
                top[at] = top[at - 1];
                at--;
            }
            top[at] = j;
        }
        float peak = -INFINITY, total = 0.0f;
        for (int32_t t = 0; t < picked; t++) peak = sim[top[t]] > peak ? sim[top[t]] : peak;
        memset(mean, 0, sizeof(float) * 2 * (size_t)width);
        for (int32_t t = 0; t < picked; t++) /* each weight's exponential, once */
            total += (sim[top[t]] = expf(sim[top[t]] - peak));
        for (int32_t t = 0; t < picked; t++) {
            const float w = sim[top[t]] / total;
            const float *v = ring_values + (int64_t)top[t] * 2 * width;
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
    free(sim);
    free(top);
    return 0;
}
