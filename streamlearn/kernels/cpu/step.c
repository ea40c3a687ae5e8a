/* One training update of TabularNet in one call: forward, loss, backward, clip, AdamW, lazy
 * sparse Adam. The same arithmetic as streamlearn/kernels/torch_step.py's FusedTrainer (which runs it
 * as ~70 small torch ops); here the whole micro-batch costs one call, so the per-op dispatch
 * that dominates a 64-row step on a CPU is gone. Python owns every buffer (torch tensors);
 * this file allocates only per-call scratch.
 *
 * Layouts: weights row-major [out, in] as nn.Linear keeps them, views of one flat buffer with
 * matching gradient views; embedding table [buckets, e], its Adam moments [buckets, 2, e].
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "step.h"

/* where row n of the update comes from: (batch or replay arrays, its index there) */
static int64_t source_row(const Call *c, int64_t n, int *replayed) {
    *replayed = n >= c->batch;
    return *replayed ? c->r_idx[n - c->batch] : n;
}

/* sin and cos of x in float32, within 4e-6 of the exact values for |x| <= 100 (checked
 * against double precision; the default frequencies' angles stay below 100): x less the
 * nearest multiple q of pi/2 (pi/2 in two parts, Cody and Waite's reduction), then minimax
 * polynomials on [-pi/4, pi/4] (the coefficients of Moshier's Cephes sinf and cosf), the
 * quadrant q mod 4 choosing and signing them; no branches and no calls into libm. */
static inline void sincos_f32(float x, float *restrict sin_x, float *restrict cos_x) {
    const float q = rintf(x * 0.63661975f);
    const float r = (x - q * 1.5707963705062866f) - q * -4.371139000186243e-8f, r2 = r * r;
    const float s = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f +
                                                            r2 * -1.9515295891e-4f));
    const float c = 1.0f - 0.5f * r2 + r2 * r2 * (4.166664568298827e-2f +
                                                  r2 * (-1.388731625493765e-3f +
                                                        r2 * 2.443315711809948e-5f));
    const int32_t quadrant = (int32_t)q & 3;
    const float sv = quadrant & 1 ? c : s, cv = quadrant & 1 ? s : c;
    *sin_x = quadrant & 2 ? -sv : sv;
    *cos_x = (quadrant + 1) & 2 ? -cv : cv;
}

/* x = a row's first `a` numeric slots as layer 0 reads them: each value z, then with k
 * periodic features s * sin(2 pi c z) and s * (cos(2 pi c z) - 1) for the slot's k frequencies
 * c (kernels/periodic.py's arithmetic, in float32). The angles of ANGLES (slot, frequency)
 * pairs at a time go through sincos_f32 in one loop, which the compiler vectorises. */
#define ANGLES 64
static void numeric_inputs(const Net *net, const float *restrict z, int32_t a,
                           float *restrict x) {
    const int32_t k = net->periodic;
    if (!k) {
        memcpy(x, z, sizeof(float) * a);
        return;
    }
    const float s = net->periodic_scale;
    const int32_t per = ANGLES / k; /* slots per round: the binding keeps k <= 64 = ANGLES */
    float angle[ANGLES], sin_a[ANGLES], cos_a[ANGLES];
    for (int32_t j0 = 0; j0 < a; j0 += per) {
        const int32_t slots = a - j0 < per ? a - j0 : per, n = slots * k;
        for (int32_t j = 0; j < slots; j++) {
            const float *c = net->frequencies + (int64_t)(j0 + j) * k;
            const float turn = z[j0 + j] * 6.2831855f;
            for (int32_t f = 0; f < k; f++) angle[j * k + f] = turn * c[f];
        }
        for (int32_t i = 0; i < n; i++) sincos_f32(angle[i], sin_a + i, cos_a + i);
        for (int32_t j = 0; j < slots; j++) {
            float *xj = x + (int64_t)(j0 + j) * (1 + 2 * k);
            xj[0] = z[j0 + j];
            for (int32_t f = 0; f < k; f++) {
                xj[1 + f] = sin_a[j * k + f] * s;
                xj[1 + k + f] = (cos_a[j * k + f] - 1.0f) * s;
            }
        }
    }
}

/* y[n, j] (+)= bias[j] + sum_i x[n, i] * w[j, i] for i < in (w's row stride: ldw). Few outputs
 * (the head): one dot product per output. Otherwise w's block is transposed into wt first and
 * the product runs as gemm_acc. */
static void linear(const float *restrict x, int64_t rows, int32_t in, const float *restrict w,
                   int32_t ldw, const float *restrict bias, int32_t out, float *restrict y,
                   int accumulate, float *restrict wt) {
    if (out < 16) {
        for (int64_t n = 0; n < rows; n++)
            for (int32_t j = 0; j < out; j++) {
                const float *xr = x + n * in, *wr = w + (int64_t)j * ldw;
                float s = 0.0f;
                for (int32_t i = 0; i < in; i++) s += xr[i] * wr[i];
                y[n * out + j] = (accumulate ? y[n * out + j] : bias ? bias[j] : 0.0f) + s;
            }
        return;
    }
    transpose(w, out, in, ldw, wt);
    if (!accumulate)
        for (int64_t n = 0; n < rows; n++) {
            if (bias) memcpy(y + n * out, bias, sizeof(float) * out);
            else memset(y + n * out, 0, sizeof(float) * out);
        }
    gemm_acc(rows, in, out, x, in, wt, out, y, out);
}

/* g[j, i] = sum_n d[n, j] * x[n, i] (a weight gradient; g's row stride: ldg), as dT . x, or
 * with fewer inputs than outputs as (xT . d) transposed, so the long side runs along the
 * vectorised columns. t1, t2: scratch of rows * max(in, out) and in * out floats. */
static void outer_sum(const float *restrict d, int64_t rows, int32_t out,
                      const float *restrict x, int32_t in, float *restrict g, int32_t ldg,
                      float *restrict t1, float *restrict t2) {
    if (in >= out) {
        transpose(d, rows, out, out, t1);
        for (int32_t j = 0; j < out; j++) memset(g + (int64_t)j * ldg, 0, sizeof(float) * in);
        gemm_acc(out, rows, in, t1, rows, x, in, g, ldg);
        return;
    }
    transpose(x, rows, in, in, t1);
    memset(t2, 0, sizeof(float) * (size_t)in * out);
    gemm_acc(in, rows, out, t1, rows, d, out, t2, out);
    for (int32_t j = 0; j < out; j++)
        for (int32_t i = 0; i < in; i++) g[(int64_t)j * ldg + i] = t2[(int64_t)i * out + j];
}

/* dx[n, i] (+)= sum_j d[n, j] * w[j, i] (an input gradient): d . W */
static void input_grad(const float *restrict d, int64_t rows, int32_t out,
                       const float *restrict w, int32_t ldw, int32_t in, float *restrict dx,
                       int accumulate) {
    if (!accumulate) memset(dx, 0, sizeof(float) * rows * in);
    gemm_acc(rows, out, in, d, out, w, ldw, dx, in);
}

static void bias_grad(const float *d, int64_t rows, int32_t out, float *g) {
    memset(g, 0, sizeof(float) * out);
    for (int64_t n = 0; n < rows; n++)
        for (int32_t j = 0; j < out; j++) g[j] += d[n * out + j];
}

/* as torch's clamp_min(0) and threshold_backward: NaN propagates (a NaN row must show as a
 * non-finite loss, not turn into zeros) */
static void relu(float *v, int64_t count) {
    for (int64_t i = 0; i < count; i++) v[i] = v[i] < 0.0f ? 0.0f : v[i];
}

static void relu_backward(float *dv, const float *output, int64_t count) {
    for (int64_t i = 0; i < count; i++) dv[i] = output[i] <= 0.0f ? 0.0f : dv[i];
}

/* the sum of the squares of v's blocks (`blocks`: (offset, length) pairs, `count` of them) in
 * float32, as the torch step's dot products: a gradient whose square overflows there is
 * non-finite here too, and the update is skipped alike */
static float sum_of_squares(const float *v, const int64_t *blocks, int32_t count) {
    float s = 0.0f;
    for (int32_t b = 0; b < count; b++) {
        const float *x = v + blocks[2 * b];
        for (int64_t i = 0; i < blocks[2 * b + 1]; i++) s += x[i] * x[i];
    }
    return s;
}

typedef struct {
    float beta1, beta2, eps, step_size, bc2_sqrt, decay;
} Adam;

/* AdamW on flat[from, from + count), as torch's fused kernel computes it */
static void adamw(const Net *net, const Adam *o, int64_t from, int64_t count) {
    float *restrict w = net->flat + from, *restrict m = net->exp_avg + from;
    float *restrict v = net->exp_avg_sq + from;
    const float *restrict g = net->grad + from;
    for (int64_t i = 0; i < count; i++) {
        m[i] += (1.0f - o->beta1) * (g[i] - m[i]);
        v[i] = o->beta2 * v[i] + (1.0f - o->beta2) * g[i] * g[i];
        w[i] = w[i] * o->decay - o->step_size * m[i] / (sqrtf(v[i]) / o->bc2_sqrt + o->eps);
    }
}

/* The flat buffer's blocks an update with these active widths can change, as (offset,
 * length) pairs into `blocks`: layer 0's rows over the active numeric (a: columns, periodic
 * features included) and bucket columns,
 * the hidden layers whole, the head's rows and biases of the active classes, the wide term's
 * rows of those classes over the active columns. Returns how many; room for
 * 2 * (2 * width[0] + 2 * layers + 2 * k) values is needed. */
static int32_t active_blocks(const Net *net, int32_t a, int32_t ce, int32_t k,
                             int64_t *blocks) {
    const int32_t L = net->layers, ns = net->num_inputs;
    int32_t count = 0;
#define BLOCK(at, length) (blocks[2 * count] = (at), blocks[2 * count++ + 1] = (length))
    for (int32_t l = 0; l < L; l++) {
        const int64_t w = net->weight[l] - net->flat, b = net->bias[l] - net->flat;
        const int32_t units = l == L - 1 ? k : net->width[l];
        const int32_t in = l == 0 ? net->in_full : net->width[l - 1];
        if (l > 0) {
            BLOCK(w, (int64_t)units * in);
        } else {
            for (int32_t r = 0; r < units; r++) {
                BLOCK(w + (int64_t)r * in, a);
                if (ce) BLOCK(w + (int64_t)r * in + ns, ce);
            }
        }
        BLOCK(b, units);
    }
    if (net->wide) {
        const int64_t w = net->wide - net->flat;
        for (int32_t r = 0; r < k; r++) {
            BLOCK(w + (int64_t)r * net->in_full, a);
            if (ce) BLOCK(w + (int64_t)r * net->in_full + ns, ce);
        }
    }
#undef BLOCK
    return count;
}

/* Returns 1 when the update was applied, 0 when it was skipped (non-finite loss or gradient:
 * no parameter or moment changed), -1 after a forward pass only (y NULL: outputs; or
 * score_only: outputs and losses; nothing learned), -2 when scratch could not be allocated,
 * -3 when a bucket id lies outside the table (for -2 and -3: nothing changed, outputs not
 * written). */
int fused_step(const Net *net, const Call *c) {
    const int64_t rows = (int64_t)c->batch + c->r_rows;
    const int32_t slots = c->active_num, cs = c->active_cat, k = c->outputs, e = net->emb_dim;
    /* a: layer 0's active numeric columns; ns: where its embedding columns start; stride: a
     * row's numeric slots */
    const int32_t a = slots * (1 + 2 * net->periodic), ns = net->num_inputs;
    const int32_t ce = cs * e, L = net->layers, stride = net->numeric_slots;
    const int32_t cats = net->categorical_slots, last = net->width[L - 2];
    int32_t widest = ce > a ? ce : a;
    for (int32_t l = 0; l < L; l++) widest = net->width[l] > widest ? net->width[l] : widest;

    /* one scratch block: inputs, activations, logits, two gradient buffers, embedding rows */
    int64_t floats = rows * (a + ce) + rows * k + 2 * rows * widest + 2 * rows * ce +
                     2 * (int64_t)widest * (rows > widest ? rows : widest);
    for (int32_t l = 0; l + 1 < L; l++) floats += rows * net->width[l];
    float *scratch = malloc(sizeof(float) * (size_t)floats);
    /* bucket ids, distinct ids and their hash, active_blocks' pairs */
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)(6 * rows * cs + 1 +
                                                     4 * ((int64_t)net->width[0] + L + k)));
    int result = -2;
    if (!scratch || !ids) goto done;
    float *x = scratch, *emb = x + rows * a, *act[MAX_LAYERS], *p = emb + rows * ce;
    for (int32_t l = 0; l + 1 < L; l++) {
        act[l] = p;
        p += rows * net->width[l];
    }
    float *out = p, *d = out + rows * k, *dn = d + rows * widest, *d_emb = dn + rows * widest;
    float *emb_grad = d_emb + rows * ce; /* per distinct bucket */
    /* transposed weight blocks, activations and gradients for the products */
    float *wt = emb_grad + rows * ce, *wt2 = wt + (int64_t)widest * (rows > widest ? rows : widest);
    int64_t *uniq = ids + rows * cs; /* then a hash of up to 4 * rows * cs slots */
    int64_t *blocks = ids + 6 * rows * cs + 1; /* active_blocks' pairs */

    /* the update's rows: the batch, then the replay rows r_idx picks */
    for (int64_t n = 0; n < rows; n++) {
        int replayed;
        int64_t at = source_row(c, n, &replayed);
        numeric_inputs(net, (replayed ? c->r_num : c->num) + at * stride, slots, x + n * a);
        const int64_t *cat_row = (replayed ? c->r_cat : c->cat) + at * cats;
        for (int32_t t = 0; t < cs; t++) {
            if (cat_row[t] < 0 || cat_row[t] >= net->buckets) {
                result = -3;
                goto done;
            }
            ids[n * cs + t] = cat_row[t];
            memcpy(emb + n * ce + (int64_t)t * e, net->table + cat_row[t] * e, sizeof(float) * e);
        }
    }

    /* forward: hidden layers (ReLU), then the head over the k active outputs */
    const float *w0 = net->weight[0];
    linear(x, rows, a, w0, net->in_full, net->bias[0], net->width[0], act[0], 0, wt);
    if (ce) linear(emb, rows, ce, w0 + ns, net->in_full, NULL, net->width[0], act[0], 1, wt);
    for (int32_t l = 0; l + 1 < L; l++) {
        relu(act[l], rows * net->width[l]);
        if (l + 2 < L)
            linear(act[l], rows, net->width[l], net->weight[l + 1], net->width[l],
                   net->bias[l + 1], net->width[l + 1], act[l + 1], 0, wt);
    }
    linear(act[L - 2], rows, last, net->weight[L - 1], last, net->bias[L - 1], k, out, 0, wt);
    if (net->wide) { /* plus the wide term over the same inputs */
        linear(x, rows, a, net->wide, net->in_full, NULL, k, out, 1, wt);
        if (ce) linear(emb, rows, ce, net->wide + ns, net->in_full, NULL, k, out, 1, wt);
    }

    /* per-row loss, the prediction, and d(mean loss)/d(out) into d [rows, k]; without
     * targets (y NULL) only the prediction and the hidden rows */
    double total = 0.0;
    for (int64_t n = 0; n < rows; n++) {
        int replayed;
        int64_t at = source_row(c, n, &replayed);
        const void *ys = replayed ? c->r_y : c->y;
        float *o = out + n * k, *g = d + n * k, row_loss = 0.0f;
        if (net->regression) {
            if (c->prediction && n < c->batch)
                c->prediction[n * c->pred_stride] = o[0] * c->pred_scale + c->pred_loc;
            if (ys) {
                float target = (((const float *)ys)[at] - c->target_loc) / c->target_scale;
                float diff = o[0] - target;
                row_loss = diff * diff;
                g[0] = diff * (2.0f / (float)rows);
            }
        } else {
            float top = o[0], sum = 0.0f;
            for (int32_t j = 1; j < k; j++) top = o[j] > top ? o[j] : top;
            for (int32_t j = 0; j < k; j++) sum += (g[j] = expf(o[j] - top));
            for (int32_t j = 0; j < k; j++) g[j] /= sum;
            if (c->prediction && n < c->batch)
                memcpy(c->prediction + n * c->pred_stride, g, sizeof(float) * k);
            if (ys) {
                int64_t slot = ((const int64_t *)ys)[at];
                row_loss = logf(sum) + top - o[slot];
                g[slot] -= 1.0f;
                for (int32_t j = 0; j < k; j++) g[j] *= 1.0f / (float)rows;
            }
        }
        total += row_loss;
        if (c->loss) c->loss[n] = row_loss;
    }
    if (c->hidden) {
        memcpy(c->hidden, act[L - 2], sizeof(float) * (size_t)c->batch * last);
        if (c->unit_hidden)
            for (int64_t n = 0; n < c->batch; n++)
                unit_row(c->hidden + n * last, last, c->hidden + n * last);
    }
    result = c->y && !c->score_only ? 0 : -1;
    if (result == -1 || !isfinite(total)) goto done;

    /* backward into the flat gradient; the blocks of inactive inputs and outputs are never
     * written, so they stay zero (as the trainer made them) */
    const int32_t active = active_blocks(net, a, ce, k, blocks);
    for (int32_t i = 0; i < active; i++)
        memset(net->grad + blocks[2 * i], 0, sizeof(float) * (size_t)blocks[2 * i + 1]);
    if (net->wide) { /* d is d(loss)/d(out) until the loop below: the wide term's share */
        outer_sum(d, rows, k, x, a, net->grad_wide, net->in_full, wt, wt2);
        if (ce) {
            outer_sum(d, rows, k, emb, ce, net->grad_wide + ns, net->in_full, wt, wt2);
            input_grad(d, rows, k, net->wide + ns, net->in_full, ce, d_emb, 0);
        }
    }
    int32_t dw = k;
    for (int32_t l = L - 1; l >= 1; l--) {
        int32_t h = net->width[l - 1];
        outer_sum(d, rows, dw, act[l - 1], h, net->grad_weight[l], h, wt, wt2);
        bias_grad(d, rows, dw, net->grad_bias[l]);
        input_grad(d, rows, dw, net->weight[l], h, h, dn, 0);
        relu_backward(dn, act[l - 1], rows * h);
        float *t = d;
        d = dn;
        dn = t;
        dw = h;
    }
    outer_sum(d, rows, dw, x, a, net->grad_weight[0], net->in_full, wt, wt2);
    bias_grad(d, rows, dw, net->grad_bias[0]);
    int64_t distinct = 0;
    if (ce) {
        outer_sum(d, rows, dw, emb, ce, net->grad_weight[0] + ns, net->in_full, wt, wt2);
        input_grad(d, rows, dw, w0 + ns, net->in_full, ce, d_emb, net->wide != NULL);
        /* sum the rows' embedding gradients per distinct bucket; bucket 0 (padding) never
         * learns, as nn.Embedding(padding_idx=0) */
        int64_t mask = 1;
        while (mask < 2 * rows * cs) mask <<= 1;
        int64_t *seen = uniq + rows * cs; /* open addressing: bucket id -> 1 + its index */
        memset(seen, 0, sizeof(int64_t) * (size_t)mask);
        mask -= 1;
        for (int64_t i = 0; i < rows * cs; i++) {
            int64_t id = ids[i], h = (id * (int64_t)0x9E3779B1) & mask;
            if (id == 0) continue;
            while (seen[h] && uniq[seen[h] - 1] != id) h = (h + 1) & mask;
            if (!seen[h]) {
                uniq[distinct] = id;
                seen[h] = ++distinct;
                memset(emb_grad + (distinct - 1) * e, 0, sizeof(float) * e);
            }
            float *r = emb_grad + (seen[h] - 1) * e;
            for (int32_t t = 0; t < e; t++) r[t] += d_emb[i * e + t];
        }
    }

    /* global-norm clipping over the dense and the embedding gradients */
    /* (a weight never active has a zero gradient: the active blocks hold all of the norm) */
    const int64_t embedding[2] = {0, distinct * e};
    double norm = sqrt((double)sum_of_squares(net->grad, blocks, active) +
                       (double)sum_of_squares(emb_grad, embedding, 1));
    if (!isfinite(norm)) goto done;
    float scale = (float)(net->clip_norm / (norm + 1e-6));
    if (scale < 1.0f) {
        for (int32_t b = 0; b < active; b++) {
            float *g = net->grad + blocks[2 * b];
            for (int64_t i = 0; i < blocks[2 * b + 1]; i++) g[i] *= scale;
        }
        for (int64_t i = 0; i < distinct * e; i++) emb_grad[i] *= scale;
    }

    /* AdamW on the dense buffer, as torch's fused kernel computes it */
    const float b1 = net->beta1, b2 = net->beta2, eps = net->eps, lr = c->lr;
    const float step = (*net->step += 1.0f);
    const double bc1 = 1.0 - pow(b1, step), bc2 = 1.0 - pow(b2, step);
    const Adam adam = {b1, b2, eps, (float)(lr / bc1), (float)sqrt(bc2),
                       1.0f - lr * net->weight_decay};
    if (adam.decay != 1.0f) { /* decoupled weight decay moves every weight */
        adamw(net, &adam, 0, net->flat_size);
    } else { /* a weight of a slot or class never active has had zero gradients only, so zero
              * moments: its update leaves it and them as they are; only active blocks run */
        for (int32_t i = 0; i < active; i++) adamw(net, &adam, blocks[2 * i], blocks[2 * i + 1]);
    }

    /* lazy Adam on the touched embedding rows, as torch.optim.SparseAdam */
    const float sparse_size = (float)(lr * sqrt(bc2) / bc1);
    for (int64_t u = 0; u < distinct; u++) {
        float *m = net->table_moments + uniq[u] * 2 * e, *v = m + e;
        float *row = net->table + uniq[u] * e;
        const float *g = emb_grad + u * e;
        for (int32_t t = 0; t < e; t++) {
            m[t] += (1.0f - b1) * (g[t] - m[t]);
            v[t] = v[t] * b2 + (1.0f - b2) * g[t] * g[t];
            row[t] -= sparse_size * m[t] / (sqrtf(v[t]) + eps);
        }
    }
    result = 1;
done:
    free(scratch);
    free(ids);
    return result;
}

/* CompiledStep.check's value checks and FusedTrainer.observe_inputs in one pass over a batch:
 * -3 when a bucket id lies outside [0, buckets), -5 when a class slot (labels not NULL) lies
 * outside [0, outputs), in both cases with nothing changed; else 0, with active[0] and
 * active[1] widened to 1 + the last numeric / bucket column any row sets (non-zero). */
int batch_inputs(const float *num, const int64_t *cat, const int64_t *labels, int64_t rows,
                 int32_t num_slots, int32_t cat_slots, int64_t buckets, int32_t outputs,
                 int32_t *active) {
    for (int64_t i = 0; i < rows * cat_slots; i++) /* a negative id wraps to a huge one */
        if ((uint64_t)cat[i] >= (uint64_t)buckets) return -3;
    if (labels)
        for (int64_t n = 0; n < rows; n++)
            if ((uint64_t)labels[n] >= (uint64_t)outputs) return -5;
    int32_t a = active[0], c = active[1];
    for (int64_t n = 0; n < rows; n++) {
        for (int32_t j = num_slots - 1; j >= a; j--)
            if (num[n * num_slots + j] != 0.0f) {
                a = j + 1;
                break;
            }
        for (int32_t j = cat_slots - 1; j >= c; j--)
            if (cat[n * cat_slots + j] != 0) {
                c = j + 1;
                break;
            }
    }
    active[0] = a, active[1] = c;
    return 0;
}
