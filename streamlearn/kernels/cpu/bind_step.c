/* The Step type: step.c's Net built once from a trainer's buffers, the Call of each update and
 * async.c's Job owned here, so nothing of them is mirrored in Python. Its methods take numpy
 * arrays (buffer protocol) and check them (args.h); the arithmetic is step.c's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bindings.h"
#include "kernels.h"

/* -- the training step ---------------------------------------------------------------------- */

/* step.c's Net over a trainer's buffers, built once, with the Call and the Job of its calls.
 * It holds the buffers' views (so their memory lives as long as it does); a Job submitted
 * holds the views of the arrays it reads and writes, and `keep`, until wait(). */
#define NET_ARRAYS (10 + 4 * MAX_LAYERS) /* the flat buffers, the table's, the step, the wide
                                           * term's two, the frequencies; 4 a layer */
typedef struct {
    PyObject_HEAD
    Net net;
    Py_buffer net_views[NET_ARRAYS];
    Borrowed buffers;   /* the trainer's (net_views), for the object's life */
    Job job;
    Call score; /* begin()'s scoring call, the Job's first (job.score) */
    Py_buffer job_array_views[CALL_ARRAYS];
    Borrowed job_views; /* the submitted Job's arrays (job_array_views), until wait() */
    PyObject *job_keep; /* what else the Job reads or writes (tensors by address) */
    float *lrs;         /* job.lrs, [capacity] */
    int32_t *codes;     /* job.codes, [capacity] */
    int32_t capacity;
    int in_flight;
    int no_worker; /* 1: hand no Job to the worker, as where its thread cannot be started */
} Step;


static int raise_for(const Step *step, int code) {
    if (code == STEP_BAD_BUCKET) {
        PyErr_Format(PyExc_IndexError, "bucket id outside [0, %lld) in the batch",
                     (long long)step->net.buckets);
        return -1;
    }
    if (code == STEP_NO_MEMORY) {
        PyErr_SetString(PyExc_MemoryError,
                        "compiled training step: scratch memory could not be allocated");
        return -1;
    }
    return 0;
}

/* Wait for the Job, then let go of what it held (the GIL released while waiting). */
static void settle(Step *step) {
    if (!step->in_flight) return;
    Py_BEGIN_ALLOW_THREADS
    updates_wait();
    Py_END_ALLOW_THREADS
    step->in_flight = 0;
    release(&step->job_views);
    Py_CLEAR(step->job_keep);
}

static void step_dealloc(Step *step) {
    settle(step); /* updates still running write into this object and the trainer's buffers */
    release(&step->buffers);
    free(step->lrs);
    free(step->codes);
    Py_TYPE(step)->tp_free((PyObject *)step);
}

/* A float32 buffer of the trainer's of `ndim` dimensions, kept for the object's life. */
static float *take(Step *step, PyObject *obj, const char *name, int ndim, Py_ssize_t d0,
                   Py_ssize_t d1) {
    Py_buffer *view = borrow(&step->buffers, obj, name, F32, ndim, 1);
    if (!view || (ndim > 0 && check_dim(view, name, 0, d0, 0) < 0) ||
        (ndim > 1 && check_dim(view, name, 1, d1, 0) < 0))
        return NULL;
    return view->buf;
}

/* Whether [part, part + count) lies in [whole, whole + size): the dense parameters and their
 * gradients must be views of the flat buffers, which AdamW updates. */
static int inside(const float *part, Py_ssize_t count, const float *whole, int64_t size,
                  const char *name) {
    if (part >= whole && part + count <= whole + size) return 0;
    PyErr_Format(PyExc_ValueError, "%s: not a view of the flat buffer", name);
    return -1;
}

/* Step(weights, biases, weight_grads, bias_grads, flat, grad, exp_avg, exp_avg_sq, table,
 *      table_moments, step, regression, numeric_slots, categorical_slots, weight_decay,
 *      clip_norm, beta1, beta2, eps, wide=None, wide_grad=None, frequencies=None,
 *      periodic_scale=0): every buffer a writable C-contiguous float32 array (the trainer's
 * tensors' numpy() views), the four lists one per layer (hidden layers, then the head),
 * weights [width, inputs]; wide and wide_grad, both or neither, the wide term's weights and
 * gradient [head width, layer 0's inputs]; frequencies [numeric_slots, k] of the periodic
 * features (layer 0 then reads 1 + 2k columns per numeric slot). */
static PyObject *step_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *lists[4], *flat, *grad, *exp_avg, *exp_avg_sq, *table, *moments, *count;
    PyObject *wide = Py_None, *wide_grad = Py_None, *frequencies = Py_None;
    int regression, numeric_slots, categorical_slots;
    float weight_decay, clip_norm, beta1, beta2, eps, periodic_scale = 0.0f;
    static char *names[] = {"weights", "biases", "weight_grads", "bias_grads", "flat", "grad",
                            "exp_avg", "exp_avg_sq", "table", "table_moments", "step",
                            "regression", "numeric_slots", "categorical_slots", "weight_decay",
                            "clip_norm", "beta1", "beta2", "eps", "wide", "wide_grad",
                            "frequencies", "periodic_scale", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOOpiifffff|OOOf:Step", names,
                                     &lists[0], &lists[1], &lists[2], &lists[3], &flat, &grad,
                                     &exp_avg, &exp_avg_sq, &table, &moments, &count,
                                     &regression, &numeric_slots, &categorical_slots,
                                     &weight_decay, &clip_norm, &beta1, &beta2, &eps, &wide,
                                     &wide_grad, &frequencies, &periodic_scale))
        return NULL;
    Step *step = (Step *)type->tp_alloc(type, 0);
    if (!step) return NULL;
    step->buffers = (Borrowed){step->net_views, 0, NET_ARRAYS};
    step->job_views = (Borrowed){step->job_array_views, 0, CALL_ARRAYS};
    Net *net = &step->net;
    PyObject *seqs[4] = {NULL, NULL, NULL, NULL};
    static const char *const list_names[] = {"weights", "biases", "weight_grads", "bias_grads"};
    for (int i = 0; i < 4; i++)
        if (!(seqs[i] = PySequence_Fast(lists[i], list_names[i]))) goto fail;
    const Py_ssize_t layers = PySequence_Fast_GET_SIZE(seqs[0]);
    if (layers < 2 || layers > MAX_LAYERS) {
        PyErr_Format(PyExc_ValueError, "Step: 2 to %d layers (hidden layers + the head), not %zd",
                     MAX_LAYERS, layers);
        goto fail;
    }
    for (int i = 1; i < 4; i++)
        if (PySequence_Fast_GET_SIZE(seqs[i]) != layers) {
            PyErr_Format(PyExc_ValueError, "Step: %s has %zd layers, weights %zd", list_names[i],
                         PySequence_Fast_GET_SIZE(seqs[i]), layers);
            goto fail;
        }
    if (numeric_slots < 1 || categorical_slots < 0) {
        PyErr_SetString(PyExc_ValueError, "Step: slots out of range");
        goto fail;
    }
    net->layers = (int32_t)layers;
    net->numeric_slots = numeric_slots;
    net->categorical_slots = categorical_slots;
    net->regression = regression;
    net->weight_decay = weight_decay, net->clip_norm = clip_norm;
    net->beta1 = beta1, net->beta2 = beta2, net->eps = eps;
    /* the flat buffers and the table first: the layers' shapes are checked against them */
    Py_buffer *flat_view = borrow(&step->buffers, flat, "flat", F32, 1, 1);
    if (!flat_view) goto fail;
    net->flat = flat_view->buf;
    net->flat_size = flat_view->shape[0];
    if (!(net->grad = take(step, grad, "grad", 1, net->flat_size, 0)) ||
        !(net->exp_avg = take(step, exp_avg, "exp_avg", 1, net->flat_size, 0)) ||
        !(net->exp_avg_sq = take(step, exp_avg_sq, "exp_avg_sq", 1, net->flat_size, 0)))
        goto fail;
    Py_buffer *table_view = borrow(&step->buffers, table, "table", F32, 2, 1);
    if (!table_view) goto fail;
    net->table = table_view->buf;
    net->buckets = table_view->shape[0];
    net->emb_dim = (int32_t)table_view->shape[1];
    Py_buffer *moments_view = borrow(&step->buffers, moments, "table_moments", F32, 3, 1);
    if (!moments_view || check_dim(moments_view, "table_moments", 0, net->buckets, 0) < 0 ||
        check_dim(moments_view, "table_moments", 1, 2, 0) < 0 ||
        check_dim(moments_view, "table_moments", 2, net->emb_dim, 0) < 0)
        goto fail;
    net->table_moments = moments_view->buf;
    Py_buffer *count_view = borrow(&step->buffers, count, "step", F32, 0, 1);
    if (!count_view) goto fail;
    net->step = count_view->buf;
    net->periodic = 0, net->frequencies = NULL, net->periodic_scale = periodic_scale;
    if (frequencies != Py_None) {
        Py_buffer *fv = borrow(&step->buffers, frequencies, "frequencies", F32, 2, 1);
        if (!fv || check_dim(fv, "frequencies", 0, numeric_slots, 0) < 0 ||
            in_range("frequencies", fv->shape[1], 1, 64) < 0)
            goto fail;
        net->frequencies = fv->buf;
        net->periodic = (int32_t)fv->shape[1];
    }
    net->num_inputs = numeric_slots * (1 + 2 * net->periodic);
    net->in_full = net->num_inputs + categorical_slots * net->emb_dim;
    /* the layers: the views of the flat parameters and gradients, 4 per layer */
    Borrowed *held = &step->buffers;
    int32_t inputs = net->in_full;
    for (Py_ssize_t l = 0; l < layers; l++) {
        char name[4][32]; /* the arguments' names in messages: weights[0], ... */
        for (int i = 0; i < 4; i++) snprintf(name[i], sizeof(name[i]), "%s[%zd]", list_names[i], l);
        Py_buffer *wv = borrow(held, PySequence_Fast_GET_ITEM(seqs[0], l), name[0], F32, 2, 1);
        if (!wv || check_dim(wv, name[0], 1, inputs, 0) < 0 ||
            in_range(name[0], wv->shape[0], 1, INT32_MAX) < 0)
            goto fail;
        const int32_t width = (int32_t)wv->shape[0];
        net->width[l] = width;
        net->weight[l] = wv->buf;
        if (!(net->bias[l] = take(step, PySequence_Fast_GET_ITEM(seqs[1], l), name[1], 1, width,
                                  0)) ||
            !(net->grad_weight[l] = take(step, PySequence_Fast_GET_ITEM(seqs[2], l), name[2], 2,
                                         width, inputs)) ||
            !(net->grad_bias[l] = take(step, PySequence_Fast_GET_ITEM(seqs[3], l), name[3], 1,
                                       width, 0)))
            goto fail;
        const Py_ssize_t count_w = (Py_ssize_t)width * inputs;
        if (inside(net->weight[l], count_w, net->flat, net->flat_size, name[0]) < 0 ||
            inside(net->bias[l], width, net->flat, net->flat_size, name[1]) < 0 ||
            inside(net->grad_weight[l], count_w, net->grad, net->flat_size, name[2]) < 0 ||
            inside(net->grad_bias[l], width, net->grad, net->flat_size, name[3]) < 0)
            goto fail;
        inputs = width;
    }
    if ((wide == Py_None) != (wide_grad == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "Step: wide and wide_grad go together");
        goto fail;
    }
    if (wide != Py_None) {
        const int32_t outputs = net->width[layers - 1];
        const Py_ssize_t count_w = (Py_ssize_t)outputs * net->in_full;
        if (!(net->wide = take(step, wide, "wide", 2, outputs, net->in_full)) ||
            !(net->grad_wide = take(step, wide_grad, "wide_grad", 2, outputs, net->in_full)) ||
            inside(net->wide, count_w, net->flat, net->flat_size, "wide") < 0 ||
            inside(net->grad_wide, count_w, net->grad, net->flat_size, "wide_grad") < 0)
            goto fail;
    }
    for (int i = 0; i < 4; i++) Py_DECREF(seqs[i]);
    step->job.net = net;
    return (PyObject *)step;
fail:
    for (int i = 0; i < 4; i++) Py_XDECREF(seqs[i]);
    Py_DECREF(step);
    return NULL;
}

/* A Step method `name` of `count` positional arguments, as BINDING. */
#define STEP_METHOD(name, count)                                                                \
    static PyObject *step_##name##_body(Step *step, Borrowed *b, PyObject *const *args);        \
    static PyObject *step_##name(Step *step, PyObject *const *args, Py_ssize_t n) {             \
        if (check_args(#name, n, count) < 0) return NULL;                                       \
        BORROWED(b);                                                                            \
        PyObject *result = step_##name##_body(step, &b, args);                                  \
        release(&b);                                                                            \
        return result;                                                                          \
    }                                                                                           \
    static PyObject *step_##name##_body(Step *step, Borrowed *b, PyObject *const *args)

static int check_idle(const Step *step) {
    if (!step->in_flight) return 0;
    PyErr_SetString(PyExc_RuntimeError, "compiled step: a job is running, wait() for it first");
    return -1;
}

/* A call's rows and outputs from the arguments update() and begin() share, at args:
 * num, cat, y, r_num_at, r_cat_at, r_y_at, r_idx, active_num, active_cat, outputs, (lr or
 * lrs: skipped), target_loc, target_scale, pred_loc, pred_scale, prediction, loss, hidden.
 * The views go into `b`; `loss_rows` says how many losses are written (the batch, or the
 * batch and its replay rows). */
static int set_call(const Step *step, Call *call, Borrowed *b, PyObject *const *args,
                    int loss_with_replay) {
    const Net *net = &step->net;
    memset(call, 0, sizeof(*call));
    void *r_num, *r_cat, *r_y;
    int32_t active_num, active_cat, outputs;
    if (as_address(args[3], &r_num) < 0 || as_address(args[4], &r_cat) < 0 ||
        as_address(args[5], &r_y) < 0 || as_i32(args[7], "active_num", &active_num) < 0 ||
        as_i32(args[8], "active_cat", &active_cat) < 0 ||
        as_i32(args[9], "outputs", &outputs) < 0 || as_f32(args[11], &call->target_loc) < 0 ||
        as_f32(args[12], &call->target_scale) < 0 || as_f32(args[13], &call->pred_loc) < 0 ||
        as_f32(args[14], &call->pred_scale) < 0)
        return -1;
    Py_buffer *num = borrow(b, args[0], "num", F32, 2, 0);
    if (!num) return -1;
    const Py_ssize_t rows = num->shape[0];
    Py_buffer *cat = borrow(b, args[1], "cat", I64, 2, 0);
    Py_buffer *y = cat ? borrow(b, args[2], "y", net->regression ? F32 : I64, 1, 0) : NULL;
    if (!y || in_range("rows", rows, 0, INT32_MAX) < 0 ||
        check_dim(num, "num", 1, net->numeric_slots, 0) < 0 ||
        check_dim(cat, "cat", 0, rows, 0) < 0 ||
        check_dim(cat, "cat", 1, net->categorical_slots, 0) < 0 ||
        check_dim(y, "y", 0, rows, 0) < 0 ||
        in_range("active_num", active_num, 0, net->numeric_slots) < 0 ||
        in_range("active_cat", active_cat, 0, net->categorical_slots) < 0 ||
        in_range("outputs", outputs, 1, net->width[net->layers - 1]) < 0)
        return -1;
    call->num = num->buf, call->cat = cat->buf, call->y = y->buf;
    call->batch = (int32_t)rows;
    call->active_num = active_num, call->active_cat = active_cat, call->outputs = outputs;
    if (args[6] != Py_None) {
        Py_buffer *idx = borrow(b, args[6], "r_idx", I64, 1, 0);
        if (!idx || in_range("replay rows", idx->shape[0], 0, INT32_MAX - rows) < 0) return -1;
        if (!r_num || !r_cat || !r_y) {
            PyErr_SetString(PyExc_ValueError, "replay rows without the reservoir's buffers");
            return -1;
        }
        call->r_num = r_num, call->r_cat = r_cat, call->r_y = r_y, call->r_idx = idx->buf;
        call->r_rows = (int32_t)idx->shape[0];
    }
    PyObject *prediction = args[15], *loss = args[16], *hidden = args[17];
    call->pred_stride = 1;
    if (prediction != Py_None) { /* [B, >= outputs], or values [B] */
        Py_buffer *p = borrow(b, prediction, "prediction", F32, -1, 1);
        if (!p || check_dim(p, "prediction", 0, rows, 0) < 0) return -1;
        if (p->ndim == 2) {
            if (check_dim(p, "prediction", 1, outputs, 1) < 0 ||
                in_range("prediction columns", p->shape[1], 1, INT32_MAX) < 0)
                return -1;
            call->pred_stride = (int32_t)p->shape[1];
        } else if (outputs != 1) {
            PyErr_SetString(PyExc_ValueError, "prediction: [B] holds one output");
            return -1;
        }
        call->prediction = p->buf;
    }
    if (loss != Py_None) {
        Py_buffer *l = borrow(b, loss, "loss", F32, 1, 1);
        if (!l || check_dim(l, "loss", 0, rows + (loss_with_replay ? call->r_rows : 0), 1) < 0)
            return -1;
        call->loss = l->buf;
    }
    if (hidden != Py_None) {
        Py_buffer *h = borrow(b, hidden, "hidden", F32, 2, 1);
        if (!h || check_dim(h, "hidden", 0, rows, 0) < 0 ||
            check_dim(h, "hidden", 1, net->width[net->layers - 2], 0) < 0)
            return -1;
        call->hidden = h->buf;
    }
    return 0;
}

static int run(const Step *step, const Call *call) {
    int code;
    Py_BEGIN_ALLOW_THREADS
    code = fused_step(&step->net, call);
    Py_END_ALLOW_THREADS
    return code;
}

/* run() for a call that learns nothing (y NULL or score_only): 0, or -1 with a Python error. */
static int run_forward(const Step *step, const Call *call) {
    const int code = run(step, call);
    if (raise_for(step, code) < 0) return -1;
    if (code == STEP_FORWARD_ONLY) return 0;
    PyErr_Format(PyExc_MemoryError, "compiled forward pass failed (code %d)", code);
    return -1;
}

/* update(num, cat, y, r_num_at, r_cat_at, r_y_at, r_idx, active_num, active_cat, outputs, lr,
 *        target_loc, target_scale, pred_loc, pred_scale, prediction, loss, hidden)
 * -> APPLIED or SKIPPED: one update over the batch rows (float32 num [B, numeric_slots], int64
 * cat [B, categorical_slots], y [B]: int64 class slots or float32 values) followed by the
 * reservoir rows (data_ptr() of its tensors) that int64 r_idx picks (None: no replay).
 * Outputs where not None: float32 prediction [B, >= outputs] (or [B] values), loss [>= B +
 * replay rows], hidden [B, H]. IndexError for a bucket id outside the table, nothing changed. */
STEP_METHOD(update, 18) {
    Call call;
    if (check_idle(step) < 0 || set_call(step, &call, b, args, 1) < 0 ||
        as_f32(args[10], &call.lr) < 0)
        return NULL;
    const int code = run(step, &call);
    return raise_for(step, code) < 0 ? NULL : PyLong_FromLong(code);
}

/* Room for `count` updates' rates and codes in the Job; -1 with a Python error. */
static int reserve(Step *step, Py_ssize_t count) {
    if (count <= step->capacity) return 0;
    float *lrs = realloc(step->lrs, sizeof(float) * (size_t)count);
    if (lrs) step->lrs = lrs;
    int32_t *codes = realloc(step->codes, sizeof(int32_t) * (size_t)count);
    if (codes) step->codes = codes;
    if (!lrs || !codes) {
        PyErr_NoMemory();
        return -1;
    }
    step->capacity = (int32_t)count;
    return 0;
}

/* Copy the learning rates into the Job's array; -1 with a Python error. */
static int set_rates(Step *step, PyObject *rates) {
    PyObject *seq = PySequence_Fast(rates, "lrs: a sequence of floats");
    if (!seq) return -1;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    if (count < 1 || count > 1 << 16 || reserve(step, count) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "lrs: 1 to 65536 updates");
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t u = 0; u < count; u++)
        if (as_f32(PySequence_Fast_GET_ITEM(seq, u), &step->lrs[u]) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    Py_DECREF(seq);
    step->job.updates = (int32_t)count;
    step->job.lrs = step->lrs;
    step->job.codes = step->codes;
    return 0;
}

/* Hand the Job as it stands to the worker thread, holding `b`'s views and `keep` until wait().
 * True, or False when no worker thread could be started (nothing ran; the views let go). */
static PyObject *submit(Step *step, Borrowed *b, PyObject *keep) {
    int code;
    if (step->no_worker) Py_RETURN_FALSE;
    memcpy(step->job_views.views, b->views, sizeof(Py_buffer) * (size_t)b->count);
    step->job_views.count = b->count; /* the Job's now: released by settle() */
    b->count = 0;
    step->job_keep = Py_NewRef(keep);
    step->in_flight = 1;
    Py_BEGIN_ALLOW_THREADS
    code = updates_submit(&step->job);
    Py_END_ALLOW_THREADS
    if (code != 0) {
        step->in_flight = 0;
        release(&step->job_views);
        Py_CLEAR(step->job_keep);
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* begin(num, cat, y, r_num_at, r_cat_at, r_y_at, r_idx, active_num, active_cat, outputs, lrs,
 *       target_loc, target_scale, pred_loc, pred_scale, prediction, loss, hidden, keep)
 * -> bool: score the batch (the first update's forward pass over the batch rows alone:
 * prediction, loss [B] and hidden written, nothing learned), then its len(lrs) updates: update u
 * takes the u-th equal share of the replay rows and lrs[a] after a applied updates. Both run on
 * the worker thread, the scoring where the last updates left the weights (async.c); this returns
 * once the scores are written. False when no worker thread could be started (scored here,
 * nothing learned). Until wait() nothing may touch the trainer's buffers, the reservoir or
 * `keep`. */
STEP_METHOD(begin, 19) {
    if (check_idle(step) < 0) return NULL;
    Call *call = &step->job.call, *score = &step->score;
    if (set_call(step, call, b, args, 0) < 0 || set_rates(step, args[10]) < 0) return NULL;
    const int32_t replayed = call->r_rows, updates = step->job.updates;
    *score = *call;
    score->r_rows = 0, score->score_only = 1, score->lr = 0.0f;
    step->job.per_update = call->r_rows = replayed / updates;
    call->score_only = 0;
    call->prediction = call->loss = call->hidden = NULL;
    step->job.score = score;
    PyObject *started = submit(step, b, args[18]);
    step->job.score = NULL;
    if (started == Py_False) { /* nothing ran: score here (the arguments outlive the call) */
        if (run_forward(step, score) < 0) {
            Py_DECREF(started);
            return NULL;
        }
        return started;
    }
    const int code = step->job.score_code;
    if (code != STEP_FORWARD_ONLY) { /* scoring failed: the updates were not run */
        settle(step);
        Py_DECREF(started);
        if (raise_for(step, code) == 0)
            PyErr_Format(PyExc_MemoryError, "compiled forward pass failed (code %d)", code);
        return NULL;
    }
    return started;
}

/* forward(num, cat, outputs, active_num, active_cat, pred_loc, pred_scale, prediction,
 *         hidden, overlap, unit) -> bool: a forward pass only over float32 num
 * [N, numeric_slots] and int64 cat [N, categorical_slots], nothing learned: float32
 * prediction [N, >= outputs] (rows of contiguous elements, any row stride) and the last hidden
 * rows [N, H] written, scaled to unit length where unit is true (the error memory's keys).
 * With overlap on the worker thread (wait() for it), False when none could be started
 * (nothing ran). */
STEP_METHOD(forward, 11) {
    if (check_idle(step) < 0) return NULL;
    const Net *net = &step->net;
    Call *call = &step->job.call;
    memset(call, 0, sizeof(*call));
    int32_t outputs, active_num, active_cat;
    const int overlap = PyObject_IsTrue(args[9]), unit = PyObject_IsTrue(args[10]);
    if (overlap < 0 || unit < 0 || as_i32(args[2], "outputs", &outputs) < 0 ||
        as_i32(args[3], "active_num", &active_num) < 0 ||
        as_i32(args[4], "active_cat", &active_cat) < 0 || as_f32(args[5], &call->pred_loc) < 0 ||
        as_f32(args[6], &call->pred_scale) < 0)
        return NULL;
    Py_buffer *num = borrow(b, args[0], "num", F32, 2, 0);
    Py_buffer *cat = num ? borrow(b, args[1], "cat", I64, 2, 0) : NULL;
    Py_buffer *prediction = cat ? borrow_as(b, args[7], "prediction", F32, 2, 1, 1) : NULL;
    Py_buffer *hidden = prediction ? borrow(b, args[8], "hidden", F32, 2, 1) : NULL;
    if (!hidden) return NULL;
    const Py_ssize_t rows = num->shape[0];
    if (in_range("rows", rows, 0, INT32_MAX) < 0 ||
        check_dim(num, "num", 1, net->numeric_slots, 0) < 0 ||
        check_dim(cat, "cat", 0, rows, 0) < 0 ||
        check_dim(cat, "cat", 1, net->categorical_slots, 0) < 0 ||
        in_range("active_num", active_num, 0, net->numeric_slots) < 0 ||
        in_range("active_cat", active_cat, 0, net->categorical_slots) < 0 ||
        in_range("outputs", outputs, 1, net->width[net->layers - 1]) < 0 ||
        check_dim(prediction, "prediction", 0, rows, 0) < 0 ||
        check_dim(prediction, "prediction", 1, outputs, 1) < 0 ||
        in_range("prediction's row stride", prediction->strides[0] / 4, outputs, INT32_MAX) < 0 ||
        check_dim(hidden, "hidden", 0, rows, 0) < 0 ||
        check_dim(hidden, "hidden", 1, net->width[net->layers - 2], 0) < 0)
        return NULL;
    call->num = num->buf, call->cat = cat->buf, call->batch = (int32_t)rows;
    call->active_num = active_num, call->active_cat = active_cat, call->outputs = outputs;
    call->prediction = prediction->buf, call->pred_stride = (int32_t)(prediction->strides[0] / 4);
    call->hidden = hidden->buf, call->unit_hidden = unit;
    if (overlap) { /* a Job of one call, its rate unused */
        if (reserve(step, 1) < 0) return NULL;
        step->lrs[0] = 0.0f;
        step->job.updates = 1, step->job.per_update = 0;
        step->job.lrs = step->lrs, step->job.codes = step->codes;
        return submit(step, b, Py_None);
    }
    /* the ring holds only rows a training step accepted */
    return run_forward(step, call) < 0 ? NULL : Py_NewRef(Py_True);
}

/* wait() -> codes: block until the submitted Job has run (the GIL released); its fused_step
 * codes (APPLIED or SKIPPED per update, FORWARD_ONLY for a forward pass). IndexError or
 * MemoryError where one failed. */
static PyObject *step_wait(Step *step, PyObject *unused) {
    (void)unused;
    if (!step->in_flight) {
        PyErr_SetString(PyExc_RuntimeError, "compiled step: nothing submitted");
        return NULL;
    }
    settle(step);
    const int32_t updates = step->job.updates;
    PyObject *codes = PyList_New(updates);
    if (!codes) return NULL;
    for (int32_t u = 0; u < updates; u++) {
        const int code = step->codes[u];
        PyObject *item = PyLong_FromLong(code);
        if (!item || raise_for(step, code) < 0) {
            Py_XDECREF(item);
            Py_DECREF(codes);
            return NULL;
        }
        PyList_SET_ITEM(codes, u, item);
    }
    return codes;
}

/* check(num, cat, labels, outputs, active_num, active_cat) -> (active_num, active_cat): a
 * batch's values checked (bucket ids within the table, int64 labels [B] or None within
 * [0, outputs): IndexError otherwise) and the active widths widened to every slot it sets. */
STEP_METHOD(check, 6) {
    int32_t outputs, active[2];
    if (as_i32(args[3], "outputs", &outputs) < 0 ||
        as_i32(args[4], "active_num", &active[0]) < 0 ||
        as_i32(args[5], "active_cat", &active[1]) < 0)
        return NULL;
    const Net *net = &step->net;
    Py_buffer *num = borrow(b, args[0], "num", F32, 2, 0);
    Py_buffer *cat = num ? borrow(b, args[1], "cat", I64, 2, 0) : NULL;
    if (!cat) return NULL;
    const Py_ssize_t rows = num->shape[0];
    if (check_dim(num, "num", 1, net->numeric_slots, 0) < 0 ||
        check_dim(cat, "cat", 0, rows, 0) < 0 ||
        check_dim(cat, "cat", 1, net->categorical_slots, 0) < 0 ||
        in_range("active_num", active[0], 0, net->numeric_slots) < 0 ||
        in_range("active_cat", active[1], 0, net->categorical_slots) < 0)
        return NULL;
    const int64_t *labels = NULL;
    if (args[2] != Py_None) {
        Py_buffer *view = borrow(b, args[2], "labels", I64, 1, 0);
        if (!view || check_dim(view, "labels", 0, rows, 0) < 0) return NULL;
        labels = view->buf;
    }
    const int code = batch_inputs(num->buf, cat->buf, labels, rows, net->numeric_slots,
                                  net->categorical_slots, net->buckets, outputs, active);
    if (code == STEP_BAD_CLASS) {
        PyErr_Format(PyExc_IndexError, "class slot outside the %d switched on in the batch",
                     (int)outputs);
        return NULL;
    }
    if (raise_for(step, code) < 0) return NULL;
    return Py_BuildValue("(ii)", (int)active[0], (int)active[1]);
}

static PyObject *step_in_flight(Step *step, void *unused) {
    (void)unused;
    return PyBool_FromLong(step->in_flight);
}


static PyMethodDef step_methods[] = {
    {"update", FASTCALL(step_update), "One update; see bind_step.c."},
    {"begin", FASTCALL(step_begin), "Score the batch, start its updates on the worker thread."},
    {"forward", FASTCALL(step_forward), "A forward pass only (the error memory's re-keying)."},
    {"wait", (PyCFunction)step_wait, METH_NOARGS, "Wait for the submitted job; its codes."},
    {"check", FASTCALL(step_check), "Check a batch's values, widen the active slots."},
    {NULL, NULL, 0, NULL},
};

static PyObject *step_get_worker(Step *step, void *unused) {
    (void)unused;
    return PyBool_FromLong(!step->no_worker);
}

static int step_set_worker(Step *step, PyObject *value, void *unused) {
    (void)unused;
    const int on = value ? PyObject_IsTrue(value) : -1;
    if (on < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "worker: True or False");
        return -1;
    }
    step->no_worker = !on;
    return 0;
}

static PyGetSetDef step_getset[] = {
    {"in_flight", (getter)step_in_flight, NULL, "whether a submitted job awaits wait()", NULL},
    {"worker", (getter)step_get_worker, (setter)step_set_worker,
     "False: begin() and forward(overlap) hand nothing to the worker thread and return False, "
     "as where its thread cannot be started",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject StepType = {
    PyVarObject_HEAD_INIT(NULL, 0) /* (the macro ends in a comma) */
    .tp_name = NAME(KERNELS_MODULE) ".Step",
    .tp_basicsize = sizeof(Step),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The training step of step.c over one trainer's buffers (see bind_step.c).",
    .tp_new = step_new,
    .tp_dealloc = (destructor)step_dealloc,
    .tp_methods = step_methods,
    .tp_getset = step_getset,
};
