/* Net and Call of step.c (one update's model buffers and rows), shared with
 * async.c, which runs a batch's updates on a second thread. */
#ifndef STREAMLEARN_KERNELS_STEP_H
#define STREAMLEARN_KERNELS_STEP_H

#include <stdint.h>

#define MAX_LAYERS 16 /* hidden layers + head */

typedef struct {
    int32_t layers;                /* hidden layers + 1 (the head) */
    int32_t numeric_slots;         /* numeric slots of a row (num's row stride) */
    int32_t periodic;              /* periodic features per slot, k (0: none) */
    float periodic_scale;          /* their scale s */
    const float *frequencies;      /* [numeric_slots, k], or NULL */
    int32_t num_inputs;            /* W0's numeric columns: numeric_slots * (1 + 2k) */
    int32_t categorical_slots;     /* categorical inputs */
    int32_t emb_dim;               /* embedding width e */
    int32_t in_full;               /* W0's row stride: num_inputs + categorical_slots * e */
    int32_t width[MAX_LAYERS];     /* output width of each layer (head: all output slots) */
    int32_t regression;
    float *weight[MAX_LAYERS];
    float *bias[MAX_LAYERS];
    float *grad_weight[MAX_LAYERS];
    float *grad_bias[MAX_LAYERS];
    float *wide, *grad_wide;       /* the wide term [width[layers - 1], in_full], or NULL */
    float *flat, *grad, *exp_avg, *exp_avg_sq; /* dense parameters, all views of these */
    int64_t flat_size;
    float *table, *table_moments;  /* [buckets, e], [buckets, 2, e] */
    int64_t buckets;
    float *step;                   /* Adam's step count (a float scalar tensor) */
    float weight_decay, clip_norm, beta1, beta2, eps;
} Net;

typedef struct {
    const float *num;      /* batch rows [batch, numeric_slots] */
    const int64_t *cat;    /* [batch, categorical_slots] */
    const void *y;         /* [batch] int64 class slots or float32 values; NULL: forward only */
    int32_t batch;
    const float *r_num;    /* replay buffer, same layouts, rows picked by r_idx */
    const int64_t *r_cat;
    const void *r_y;
    const int64_t *r_idx;
    int32_t r_rows;
    int32_t active_num, active_cat, outputs; /* a, c, k */
    float lr;
    float target_loc, target_scale; /* standardise regression targets for the loss */
    float pred_loc, pred_scale;     /* de-standardise the predicted values */
    float *prediction;     /* [batch, k] probabilities (row stride pred_stride) or [batch]
                              values; may be NULL */
    int32_t pred_stride;
    float *loss;           /* [batch + r_rows] per-row loss (may be NULL) */
    float *hidden;         /* [batch, H_last] last hidden layer (may be NULL) */
    int32_t unit_hidden;   /* 1: hidden rows scaled to unit length (error-memory keys) */
    int32_t score_only;    /* 1: with y, outputs and loss only; nothing learned */
} Call;

int fused_step(const Net *net, const Call *c);

#endif
