/* The kernels' entry points, for the Python binding (bind_host.c, bind_step.c), which checks
 * every argument before it calls one; each C file says what its kernels do. Nothing here is Python's. */
#ifndef STREAMLEARN_KERNELS_H
#define STREAMLEARN_KERNELS_H

#include <stdint.h>

#include "step.h"

/* fused_step's results (step.c) and batch_inputs' (step.c) */
#define STEP_APPLIED 1
#define STEP_SKIPPED 0
#define STEP_FORWARD_ONLY (-1)
#define STEP_NO_MEMORY (-2)
#define STEP_BAD_BUCKET (-3)
#define STEP_BAD_CLASS (-5)

/* A batch's updates for the worker thread of async.c. */
typedef struct {
    const Net *net;
    Call call;          /* the first update's call; later ones take the next replay rows */
    int32_t updates;
    int32_t per_update; /* replay rows per update (call.r_rows) */
    const float *lrs;   /* [updates]: the learning rate after a applied updates */
    int32_t *codes;     /* [updates] out: fused_step's result for each update */
    const Call *score;  /* NULL, or a scoring call run first (its result in score_code): the
                         * updates run only where it gave STEP_FORWARD_ONLY */
    int32_t score_code;
} Job;

int batch_inputs(const float *num, const int64_t *cat, const int64_t *labels, int64_t rows,
                 int32_t num_slots, int32_t cat_slots, int64_t buckets, int32_t outputs,
                 int32_t *active);
int updates_submit(Job *job);
void updates_wait(void);
int memory_compensate(const float *ring_keys, const float *ring_values, int32_t filled,
                      int32_t hidden_dim, int32_t width, const float *hidden, const float *base,
                      int32_t rows, int32_t k, float tau, float lam, float gamma,
                      int32_t regression, float *out, float *keys_out);
int memory_store(float *ring_keys, float *ring_values, int64_t size, int64_t cursor,
                 int32_t hidden_dim, int32_t width, const float *hidden, const int64_t *labels,
                 const double *targets, const float *base, int64_t rows, float *ring_num,
                 int64_t *ring_cat, const float *num, const int64_t *cat, int32_t num_dim,
                 int32_t cat_dim);
int linear_predict(const float *weights, int32_t rates, int32_t width, int64_t numeric_slots,
                   int64_t buckets, const double *shares, const float *num, int64_t num_stride,
                   int32_t num_cols, const int64_t *cat, int64_t cat_stride, int32_t cat_cols,
                   int64_t rows, int32_t active, float *each, float *mixed);
int linear_learn(float *weights, int32_t rates, int32_t width, int64_t numeric_slots,
                 int64_t buckets, const float *lrs, const float *num, int64_t num_stride,
                 int32_t num_cols, const int64_t *cat, int64_t cat_stride, int32_t cat_cols,
                 int64_t rows, int32_t active, const int64_t *target, const float *each,
                 double *loss, double fade);
void reservoir_insert(float *num, int64_t *cat, char *y, int64_t capacity, int64_t seen,
                      const float *batch_num, const int64_t *batch_cat, const char *batch_y,
                      int64_t rows, int32_t num_dim, int32_t cat_dim, int32_t y_size,
                      const int64_t *drawn);
int32_t drift_update(const double *losses, int32_t n, double *ring, int64_t window, double alpha,
                     double k, int64_t min_samples, double min_rise, int64_t cooldown,
                     int64_t *counters, double *smoothed, int32_t *fired);
int64_t hedge_hits(const int64_t *target, const float *first, const float *second, int64_t rows,
                   int32_t width);
void mix_gated(const float *base, const float *compensated, int64_t count, float weight,
               float *out);
void features_standardize(const double *num, int64_t rows, int64_t slots, int64_t used,
                          const double *count, const double *mean, const double *m2,
                          float *out);
int64_t features_observe(const double *num, int64_t rows, int64_t slots, int64_t used,
                         double *count, double *mean, double *m2);

/* A numpy bit generator's functions: the layout of numpy's bitgen_t (numpy/random/bitgen.h),
 * which BitGenerator.capsule holds; draws.c uses the first three. */
typedef struct {
    void *state;
    uint64_t (*next_uint64)(void *state);
    uint32_t (*next_uint32)(void *state);
    double (*next_double)(void *state);
    uint64_t (*next_raw)(void *state);
} BitSource;

/* out[i] uniform on [0, last] (on [0, last + i] where `growing`), as numpy's Generator.integers
 * draws int64s (draws.c) */
void uniform_draws(const BitSource *bits, uint64_t last, int32_t growing, int64_t count,
                   int64_t *out);

#endif
