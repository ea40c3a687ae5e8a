/* The host-side kernels' Python functions: features.c's standardisation and statistics,
 * drift.c's detector, replay.c's inserts, draws.c's uniform integers, memory.c's compensation
 * and writes, mix.c's evidence and gated mix. Each takes numpy arrays (buffer protocol) and
 * the torch tensors Python keeps as data_ptr() ints with their sizes, checks them (args.h),
 * then calls its kernel; nothing here computes. */
#include <stdint.h>

#include "args.h"
#include "bindings.h"
#include "kernels.h"

/* -- host-side kernels ---------------------------------------------------------------------- */

/* The arguments both feature kernels take: float64 num [rows, slots], `used` (columns from 0
 * that hold features) and the statistics, float64 count, mean and m2 [slots] (updated where
 * `out`). 0, or -1 with a Python error. */
typedef struct {
    const double *num;
    Py_ssize_t rows, slots;
    int64_t used;
    double *count, *mean, *m2;
} Statistics;

static int statistics(Borrowed *b, PyObject *const *args, int out, Statistics *st) {
    static const char *const names[] = {"count", "mean", "m2"};
    double **columns[] = {&st->count, &st->mean, &st->m2};
    Py_buffer *num = borrow(b, args[0], "num", F64, 2, 0);
    if (!num || as_i64(args[1], &st->used) < 0) return -1;
    st->num = num->buf, st->rows = num->shape[0], st->slots = num->shape[1];
    for (int i = 0; i < 3; i++) {
        Py_buffer *view = borrow(b, args[2 + i], names[i], F64, 1, out);
        if (!view || check_dim(view, names[i], 0, st->slots, 0) < 0) return -1;
        *columns[i] = view->buf;
    }
    return in_range("used", st->used, 0, st->slots);
}

/* features_standardize(num, used, count, mean, m2, out): the standardised rows, float32 out
 * [rows, slots], written. */
BINDING(features_standardize, 6) {
    Statistics st;
    if (statistics(b, args, 0, &st) < 0) return NULL;
    Py_buffer *out = borrow(b, args[5], "out", F32, 2, 1);
    if (!out || check_dim(out, "out", 0, st.rows, 0) < 0 ||
        check_dim(out, "out", 1, st.slots, 0) < 0)
        return NULL;
    features_standardize(st.num, st.rows, st.slots, st.used, st.count, st.mean, st.m2, out->buf);
    Py_RETURN_NONE;
}

/* features_observe(num, used, count, mean, m2) -> columns skipped (overflow); the statistics
 * updated in place. */
BINDING(features_observe, 5) {
    Statistics st;
    if (statistics(b, args, 1, &st) < 0) return NULL;
    return PyLong_FromLongLong(
        features_observe(st.num, st.rows, st.slots, st.used, st.count, st.mean, st.m2));
}

/* drift_update(losses, ring, window, alpha, k, min_samples, min_rise, cooldown, counters,
 * smoothed, fired) -> how many fired: float64 losses [n]; the state's float64 ring [>= window],
 * int64 counters [5] and float64 smoothed [1], updated; int32 fired [>= n] written. */
BINDING(drift_update, 11) {
    int64_t window, min_samples, cooldown;
    double alpha, k, min_rise;
    if (as_i64(args[2], &window) < 0 ||
        as_f64(args[3], &alpha) < 0 || as_f64(args[4], &k) < 0 ||
        as_i64(args[5], &min_samples) < 0 || as_f64(args[6], &min_rise) < 0 ||
        as_i64(args[7], &cooldown) < 0)
        return NULL;
    Py_buffer *losses = borrow(b, args[0], "losses", F64, 1, 0);
    Py_buffer *ring = losses ? borrow(b, args[1], "ring", F64, 1, 1) : NULL;
    Py_buffer *counters = ring ? borrow(b, args[8], "counters", I64, 1, 1) : NULL;
    Py_buffer *smoothed = counters ? borrow(b, args[9], "smoothed", F64, 1, 1) : NULL;
    Py_buffer *fired = smoothed ? borrow(b, args[10], "fired", I32, 1, 1) : NULL;
    if (!fired || in_range("losses", losses->shape[0], 0, INT32_MAX) < 0 ||
        in_range("window", window, 1, ring->shape[0]) < 0 ||
        check_dim(counters, "counters", 0, 5, 0) < 0 ||
        check_dim(smoothed, "smoothed", 0, 1, 1) < 0 ||
        check_dim(fired, "fired", 0, losses->shape[0], 1) < 0)
        return NULL;
    const int64_t *c = counters->buf; /* filled and head index the ring */
    if (in_range("counters[filled]", c[0], 0, window) < 0 ||
        in_range("counters[head]", c[1], 0, window - 1) < 0)
        return NULL;
    return PyLong_FromLong(drift_update(losses->buf, (int32_t)losses->shape[0], ring->buf,
                                          window, alpha, k, min_samples, min_rise, cooldown,
                                          counters->buf, smoothed->buf, fired->buf));
}

/* reservoir_insert(num_at, cat_at, y_at, capacity, seen, num_dim, cat_dim, y_size, batch_num,
 * batch_cat, batch_y, drawn): the reservoir's rows (data_ptr() of float32 [capacity, num_dim],
 * int64 [capacity, cat_dim], [capacity] of y_size bytes) take the batch's float32 [rows,
 * num_dim], int64 [rows, cat_dim] and [rows] rows in the slots drawn (int64 [>= rows that find
 * no free slot], or None where all do). */
BINDING(reservoir_insert, 12) {
    void *num_at, *cat_at, *y_at;
    int64_t capacity, seen;
    int32_t num_dim, cat_dim, y_size;
    if (as_address(args[0], &num_at) < 0 ||
        as_address(args[1], &cat_at) < 0 || as_address(args[2], &y_at) < 0 ||
        as_i64(args[3], &capacity) < 0 || as_i64(args[4], &seen) < 0 ||
        as_i32(args[5], "num_dim", &num_dim) < 0 || as_i32(args[6], "cat_dim", &cat_dim) < 0 ||
        as_i32(args[7], "y_size", &y_size) < 0)
        return NULL;
    if (!num_at || !cat_at || !y_at) {
        PyErr_SetString(PyExc_ValueError, "reservoir_insert: the reservoir's buffers are NULL");
        return NULL;
    }
    Py_buffer *num = borrow(b, args[8], "batch_num", F32, 2, 0);
    Py_buffer *cat = num ? borrow(b, args[9], "batch_cat", I64, 2, 0) : NULL;
    Py_buffer *y = cat ? borrow(b, args[10], "batch_y", ANY, 1, 0) : NULL;
    if (!y) return NULL;
    const Py_ssize_t rows = num->shape[0];
    if (check_dim(num, "batch_num", 1, num_dim, 0) < 0 ||
        check_dim(cat, "batch_cat", 0, rows, 0) < 0 ||
        check_dim(cat, "batch_cat", 1, cat_dim, 0) < 0 ||
        check_dim(y, "batch_y", 0, rows, 0) < 0 ||
        in_range("capacity", capacity, 0, INT64_MAX) < 0 ||
        in_range("seen", seen, 0, INT64_MAX) < 0)
        return NULL;
    if (y->itemsize != y_size) {
        PyErr_Format(PyExc_TypeError, "batch_y: elements of %d bytes expected, not %zd", y_size,
                     y->itemsize);
        return NULL;
    }
    const int64_t free_slots = seen < capacity ? capacity - seen : 0;
    const int64_t draws = rows > free_slots ? rows - free_slots : 0;
    const int64_t *drawn = NULL;
    if (args[11] != Py_None) {
        Py_buffer *view = borrow(b, args[11], "drawn", I64, 1, 0);
        if (!view || check_dim(view, "drawn", 0, draws, 1) < 0) return NULL;
        drawn = view->buf;
    } else if (draws) {
        PyErr_Format(PyExc_ValueError, "drawn: %lld draws needed, None given", (long long)draws);
        return NULL;
    }
    reservoir_insert(num_at, cat_at, y_at, capacity, seen, num->buf, cat->buf, y->buf, rows,
                     num_dim, cat_dim, y_size, drawn);
    Py_RETURN_NONE;
}

/* uniform_draws(capsule, last, growing, out): int64 out [count] written, each uniform on
 * [0, last] (on [0, last + i] where growing), drawn from the numpy bit generator whose
 * BitGenerator.capsule is given. The caller owns the generator (numpy's lock is not taken). */
BINDING(uniform_draws, 4) {
    BitSource *bits = PyCapsule_GetPointer(args[0], "BitGenerator");
    int64_t last, growing;
    if (!bits || as_i64(args[1], &last) < 0 || as_i64(args[2], &growing) < 0) return NULL;
    Py_buffer *out = borrow(b, args[3], "out", I64, 1, 1);
    const int64_t most = growing ? INT64_MAX - out->shape[0] : INT64_MAX; /* last + i fits */
    if (!out || in_range("last", last, 0, most) < 0) return NULL;
    uniform_draws(bits, (uint64_t)last, growing != 0, out->shape[0], out->buf);
    Py_RETURN_NONE;
}

/* memory_compensate(keys_at, values_at, filled, k, tau, lam, gamma, regression, hidden, base,
 * out, keys) -> 0, or -2 (no scratch memory): the ring (data_ptr() of float32 [>= filled, H]
 * keys and [>= filled, 2 W] values) compensates float32 base [rows, W] for hidden [rows, H]
 * into out [rows, W], the unit keys of hidden into keys [rows, H]. */
BINDING(memory_compensate, 12) {
    void *keys_at, *values_at;
    int32_t filled, k, regression;
    float tau, lam, gamma;
    if (as_address(args[0], &keys_at) < 0 ||
        as_address(args[1], &values_at) < 0 || as_i32(args[2], "filled", &filled) < 0 ||
        as_i32(args[3], "k", &k) < 0 || as_f32(args[4], &tau) < 0 || as_f32(args[5], &lam) < 0 ||
        as_f32(args[6], &gamma) < 0 || as_i32(args[7], "regression", &regression) < 0)
        return NULL;
    if (!keys_at || !values_at || filled < 0) {
        PyErr_SetString(PyExc_ValueError, "memory_compensate: no ring");
        return NULL;
    }
    Py_buffer *hidden = borrow(b, args[8], "hidden", F32, 2, 0);
    Py_buffer *base = hidden ? borrow(b, args[9], "base", F32, 2, 0) : NULL;
    Py_buffer *out = base ? borrow(b, args[10], "out", F32, 2, 1) : NULL;
    Py_buffer *keys = out ? borrow(b, args[11], "keys", F32, 2, 1) : NULL;
    if (!keys) return NULL;
    const Py_ssize_t rows = hidden->shape[0], dim = hidden->shape[1], width = base->shape[1];
    if (in_range("rows", rows, 0, INT32_MAX) < 0 || in_range("hidden_dim", dim, 1, INT32_MAX) < 0 ||
        in_range("width", width, 1, INT32_MAX) < 0 || check_dim(base, "base", 0, rows, 0) < 0 ||
        check_dim(out, "out", 0, rows, 0) < 0 || check_dim(out, "out", 1, width, 0) < 0 ||
        check_dim(keys, "keys", 0, rows, 0) < 0 || check_dim(keys, "keys", 1, dim, 0) < 0)
        return NULL;
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = memory_compensate(keys_at, values_at, filled, (int32_t)dim, (int32_t)width,
                             hidden->buf, base->buf, (int32_t)rows, k, tau, lam, gamma,
                             regression, out->buf, keys->buf);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(code);
}

/* memory_store(keys_at, values_at, size, cursor, hidden, labels, targets, base, ring_num_at,
 * ring_cat_at, num, cat) -> 0, or -3 (a label outside the class slots: nothing written): float32
 * hidden [rows <= size, H] and base [rows, W], with int64 labels [rows] or (regression) float64
 * targets [rows], go to the ring's slots from cursor on (data_ptr() of float32 [size, H] keys
 * and [size, 2 W] values); where ring_num_at is not None, float32 num [rows, a] and int64 cat
 * [rows, c] to the rings mirrored slot for slot ([size, a], [size, c]). */
BINDING(memory_store, 12) {
    void *keys_at, *values_at, *ring_num_at, *ring_cat_at;
    int64_t size, cursor;
    if (as_address(args[0], &keys_at) < 0 ||
        as_address(args[1], &values_at) < 0 || as_i64(args[2], &size) < 0 ||
        as_i64(args[3], &cursor) < 0 || as_address(args[8], &ring_num_at) < 0 ||
        as_address(args[9], &ring_cat_at) < 0)
        return NULL;
    if (!keys_at || !values_at || size < 1 || cursor < 0 || cursor >= size) {
        PyErr_SetString(PyExc_ValueError, "memory_store: no ring, or a cursor outside it");
        return NULL;
    }
    Py_buffer *hidden = borrow(b, args[4], "hidden", F32, 2, 0);
    Py_buffer *base = hidden ? borrow(b, args[7], "base", F32, 2, 0) : NULL;
    if (!base) return NULL;
    const Py_ssize_t rows = hidden->shape[0], dim = hidden->shape[1], width = base->shape[1];
    if (in_range("rows", rows, 0, size) < 0 || in_range("hidden_dim", dim, 1, INT32_MAX) < 0 ||
        in_range("width", width, 1, INT32_MAX) < 0 || check_dim(base, "base", 0, rows, 0) < 0)
        return NULL;
    const int64_t *labels = NULL;
    const double *targets = NULL;
    if ((args[5] == Py_None) == (args[6] == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "memory_store: labels or targets, one of them");
        return NULL;
    }
    if (args[5] != Py_None) {
        Py_buffer *view = borrow(b, args[5], "labels", I64, 1, 0);
        if (!view || check_dim(view, "labels", 0, rows, 0) < 0) return NULL;
        labels = view->buf;
    } else {
        Py_buffer *view = borrow(b, args[6], "targets", F64, 1, 0);
        if (!view || check_dim(view, "targets", 0, rows, 0) < 0) return NULL;
        targets = view->buf;
    }
    const float *num = NULL;
    const int64_t *cat = NULL;
    Py_ssize_t num_dim = 0, cat_dim = 0;
    const int mirrored = ring_num_at != NULL;
    if (mirrored != (ring_cat_at != NULL) || mirrored != (args[10] != Py_None) ||
        mirrored != (args[11] != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "memory_store: both rings and both inputs, or none");
        return NULL;
    }
    if (mirrored) {
        Py_buffer *nv = borrow(b, args[10], "num", F32, 2, 0);
        Py_buffer *cv = nv ? borrow(b, args[11], "cat", I64, 2, 0) : NULL;
        if (!cv || check_dim(nv, "num", 0, rows, 0) < 0 || check_dim(cv, "cat", 0, rows, 0) < 0 ||
            in_range("num columns", nv->shape[1], 0, INT32_MAX) < 0 ||
            in_range("cat columns", cv->shape[1], 0, INT32_MAX) < 0)
            return NULL;
        num = nv->buf, cat = cv->buf, num_dim = nv->shape[1], cat_dim = cv->shape[1];
    }
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = memory_store(keys_at, values_at, size, cursor, (int32_t)dim, (int32_t)width,
                        hidden->buf, labels, targets, base->buf, rows, ring_num_at, ring_cat_at,
                        num, cat, (int32_t)num_dim, (int32_t)cat_dim);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(code);
}

/* The linear model's rates' weights (float32 [rates, numeric_slots + buckets + 1, width],
 * C-contiguous), its numeric rows (float32 [rows, <= numeric_slots]) and bucket rows (int64
 * [rows, c]), each with rows any distance apart, and a float array of one value per rate
 * (args[4]: shares, float64, or lrs, float32): checked, their sizes into `a`. */
typedef struct {
    Py_buffer *weights, *num, *cat, *per_rate;
    int64_t numeric_slots, buckets, rows, num_stride, cat_stride;
    int32_t rates, width;
} LinearArgs;

static int linear_args(Borrowed *b, PyObject *const *args, enum Type per_rate, LinearArgs *a) {
    if (as_i64(args[1], &a->numeric_slots) < 0) return -1;
    a->weights = borrow(b, args[0], "weights", F32, 3, 1);
    a->num = a->weights ? borrow_as(b, args[2], "num", F32, 2, 0, 1) : NULL;
    a->cat = a->num ? borrow_as(b, args[3], "cat", I64, 2, 0, 1) : NULL;
    a->per_rate = a->cat ? borrow(b, args[4], per_rate == F64 ? "shares" : "lrs", per_rate, 1, 0)
                         : NULL;
    if (!a->per_rate) return -1;
    a->rows = a->num->shape[0];
    a->buckets = a->weights->shape[1] - a->numeric_slots - 1;
    a->num_stride = a->num->strides[0] / (Py_ssize_t)sizeof(float);
    a->cat_stride = a->cat->strides[0] / (Py_ssize_t)sizeof(int64_t);
    if (in_range("rates", a->weights->shape[0], 1, INT32_MAX) < 0 ||
        in_range("numeric_slots", a->numeric_slots, 0, a->weights->shape[1] - 1) < 0 ||
        in_range("width", a->weights->shape[2], 1, INT32_MAX) < 0 ||
        in_range("num columns", a->num->shape[1], 0, a->numeric_slots) < 0 ||
        in_range("cat columns", a->cat->shape[1], 0, INT32_MAX) < 0 ||
        check_dim(a->cat, "cat", 0, a->rows, 0) < 0 ||
        check_dim(a->per_rate, per_rate == F64 ? "shares" : "lrs", 0, a->weights->shape[0], 0) <
            0)
        return -1;
    a->rates = (int32_t)a->weights->shape[0];
    a->width = (int32_t)a->weights->shape[2];
    return 0;
}

/* The array `obj` (argument `name`) as float32 [rates, rows, width], writable where `out`;
 * NULL with a Python error. */
static Py_buffer *per_rate_rows(Borrowed *b, PyObject *obj, const char *name, int out,
                                const LinearArgs *a) {
    Py_buffer *view = borrow(b, obj, name, F32, 3, out);
    if (!view || check_dim(view, name, 0, a->rates, 0) < 0 ||
        check_dim(view, name, 1, a->rows, 0) < 0 || check_dim(view, name, 2, a->width, 0) < 0)
        return NULL;
    return view;
}

/* linear_predict(weights, numeric_slots, num, cat, shares, active, each, mixed) -> 0, or -3
 * (a bucket outside the weights: nothing written): each rate's probabilities over the first
 * `active` class slots into float32 each [rates, rows, width], their mix by float64 shares
 * [rates] into float32 mixed [rows, width]. */
BINDING(linear_predict, 8) {
    LinearArgs a;
    int32_t active;
    if (linear_args(b, args, F64, &a) < 0 || as_i32(args[5], "active", &active) < 0)
        return NULL;
    Py_buffer *each = per_rate_rows(b, args[6], "each", 1, &a);
    Py_buffer *mixed = each ? borrow(b, args[7], "mixed", F32, 2, 1) : NULL;
    if (!mixed || in_range("active", active, 0, a.width) < 0 ||
        check_dim(mixed, "mixed", 0, a.rows, 0) < 0 ||
        check_dim(mixed, "mixed", 1, a.width, 0) < 0)
        return NULL;
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = linear_predict(a.weights->buf, a.rates, a.width, a.numeric_slots, a.buckets,
                          a.per_rate->buf, a.num->buf, a.num_stride, (int32_t)a.num->shape[1],
                          a.cat->buf, a.cat_stride, (int32_t)a.cat->shape[1], a.rows, active,
                          each->buf, mixed->buf);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(code);
}

/* linear_learn(weights, numeric_slots, num, cat, lrs, active, target, each, loss, fade) -> 0,
 * -3 (a bucket outside the weights) or -5 (an int64 target outside [0, active)), nothing
 * written then: each rate's discounted log loss (float64 loss [rates], in place, faded by
 * `fade`) and one SGD step at float32 lrs [rates] from its float32 predictions each [rates,
 * rows, width]. */
BINDING(linear_learn, 10) {
    LinearArgs a;
    int32_t active;
    double fade;
    if (linear_args(b, args, F32, &a) < 0 || as_i32(args[5], "active", &active) < 0 ||
        as_f64(args[9], &fade) < 0)
        return NULL;
    Py_buffer *target = borrow(b, args[6], "target", I64, 1, 0);
    Py_buffer *each = target ? per_rate_rows(b, args[7], "each", 0, &a) : NULL;
    Py_buffer *loss = each ? borrow(b, args[8], "loss", F64, 1, 1) : NULL;
    if (!loss || in_range("active", active, 1, a.width) < 0 ||
        check_dim(target, "target", 0, a.rows, 0) < 0 ||
        check_dim(loss, "loss", 0, a.rates, 0) < 0)
        return NULL;
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = linear_learn(a.weights->buf, a.rates, a.width, a.numeric_slots, a.buckets,
                        a.per_rate->buf, a.num->buf, a.num_stride, (int32_t)a.num->shape[1],
                        a.cat->buf, a.cat_stride, (int32_t)a.cat->shape[1], a.rows, active,
                        target->buf, each->buf, loss->buf, fade);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(code);
}

/* float32 [rows, width] `name`, C-contiguous, the shape of `like` where given */
static Py_buffer *prediction_rows(Borrowed *b, PyObject *obj, const char *name, int out,
                                  const Py_buffer *like) {
    Py_buffer *view = borrow(b, obj, name, F32, 2, out);
    if (!view || (like && (check_dim(view, name, 0, like->shape[0], 0) < 0 ||
                           check_dim(view, name, 1, like->shape[1], 0) < 0)))
        return NULL;
    return view;
}

/* hedge_hits(target, first, second) -> rows whose float32 second [rows, width] arg max is
 * their int64 class slot target [rows], minus those whose first one is. */
BINDING(hedge_hits, 3) {
    Py_buffer *first = prediction_rows(b, args[1], "first", 0, NULL);
    Py_buffer *second = first ? prediction_rows(b, args[2], "second", 0, first) : NULL;
    Py_buffer *target = second ? borrow(b, args[0], "target", I64, 1, 0) : NULL;
    if (!target || check_dim(target, "target", 0, first->shape[0], 0) < 0 ||
        in_range("width", first->shape[1], 1, INT32_MAX) < 0)
        return NULL;
    return PyLong_FromLongLong(hedge_hits(target->buf, first->buf, second->buf,
                                          first->shape[0], (int32_t)first->shape[1]));
}

/* mix_gated(base, compensated, weight, out): float32 out = (1 - weight) base + weight
 * compensated, all three float32 [rows, width]. */
BINDING(mix_gated, 4) {
    float weight;
    if (as_f32(args[2], &weight) < 0) return NULL;
    Py_buffer *base = prediction_rows(b, args[0], "base", 0, NULL);
    Py_buffer *compensated = base ? prediction_rows(b, args[1], "compensated", 0, base) : NULL;
    Py_buffer *out = compensated ? prediction_rows(b, args[3], "out", 1, base) : NULL;
    if (!out) return NULL;
    mix_gated(base->buf, compensated->buf, base->shape[0] * base->shape[1], weight, out->buf);
    Py_RETURN_NONE;
}
