/* The binding's argument handling, shared by its files (bind_host.c, bind_step.c): arrays
 * borrowed through the buffer protocol with their element type, C-contiguity, shapes and
 * writability checked, Python numbers read with range checks, and the BINDING macro that makes
 * a METH_FASTCALL module function. Static inline: each caller's checks compile into it. */
#ifndef STREAMLEARN_ARGS_H
#define STREAMLEARN_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- arguments ------------------------------------------------------------------------------ */

enum Type { F32, F64, I64, I32, ANY }; /* ANY: any element type (its size checked apart) */
static const char *const TYPE_NAMES[] = {"float32", "float64", "int64", "int32", "any"};

/* Whether a buffer's elements are of `type`: the struct-module format code and size. */
static inline int has_type(const Py_buffer *view, enum Type type) {
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=') f++;
#if PY_LITTLE_ENDIAN
    if (*f == '<') f++;
#else
    if (*f == '>') f++;
#endif
    if (f[0] == '\0' || f[1] != '\0') return 0;
    switch (type) {
    case F32: return f[0] == 'f' && view->itemsize == 4;
    case F64: return f[0] == 'd' && view->itemsize == 8;
    case I64: return (f[0] == 'l' || f[0] == 'q') && view->itemsize == 8;
    case I32: return (f[0] == 'i' || f[0] == 'l') && view->itemsize == 4;
    case ANY: return 1;
    }
    return 0;
}

/* The buffers a call borrows (or a step object holds), released together: `views` has room
 * for `capacity` of them. BORROWED declares one on the stack (nothing zeroed). */
typedef struct {
    Py_buffer *views;
    int count, capacity;
} Borrowed;
#define CALL_ARRAYS 12 /* the most arrays one call takes */
#define BORROWED(name)                                                                          \
    Py_buffer name##_views[CALL_ARRAYS];                                                        \
    Borrowed name = {name##_views, 0, CALL_ARRAYS}

static inline void release(Borrowed *b) {
    while (b->count > 0) PyBuffer_Release(&b->views[--b->count]);
}

/* The buffer of the array `obj` (argument `name`): elements of `type`, `ndim` dimensions
 * (-1: 1 or 2), C-contiguous (or, where `strided`, rows of contiguous elements any distance
 * apart), writable where `out`. Its view, kept in `b`, or NULL with a Python error. */
static inline Py_buffer *borrow_as(Borrowed *b, PyObject *obj, const char *name, enum Type type, int ndim,
                            int out, int strided) {
    if (b->count == b->capacity) {
        PyErr_SetString(PyExc_SystemError, "too many arrays in one call");
        return NULL;
    }
    Py_buffer *view = &b->views[b->count];
    const int flags = (strided ? PyBUF_STRIDES : PyBUF_C_CONTIGUOUS) | PyBUF_FORMAT |
                      (out ? PyBUF_WRITABLE : 0);
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: a %s array expected, not %.100s", name,
                     TYPE_NAMES[type], Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyObject *type_, *value, *traceback;
        PyErr_Fetch(&type_, &value, &traceback);
        PyErr_Format(PyExc_ValueError, "%s: a %s%s array expected (%S)", name,
                     strided ? "" : "C-contiguous ", out ? "writable" : "readable",
                     value ? value : Py_None);
        Py_XDECREF(type_), Py_XDECREF(value), Py_XDECREF(traceback);
        return NULL;
    }
    b->count++;
    const int dims_ok = ndim < 0 ? view->ndim == 1 || view->ndim == 2 : view->ndim == ndim;
    if (!has_type(view, type) || !dims_ok) {
        PyErr_Format(PyExc_TypeError, "%s: a %s array of %d dimension(s) expected, not '%s' of %d",
                     name, TYPE_NAMES[type], ndim, view->format ? view->format : "B", view->ndim);
        return NULL;
    }
    if (strided && ndim == 2 &&
        (view->strides[1] != view->itemsize || view->strides[0] < 0 ||
         view->strides[0] % view->itemsize != 0)) {
        PyErr_Format(PyExc_ValueError, "%s: rows of contiguous elements expected", name);
        return NULL;
    }
    return view;
}

static inline Py_buffer *borrow(Borrowed *b, PyObject *obj, const char *name, enum Type type, int ndim,
                         int out) {
    return borrow_as(b, obj, name, type, ndim, out, 0);
}

/* ValueError unless dimension `dim` of `view` is `size` (or, with `at_least`, no smaller). */
static inline int check_dim(const Py_buffer *view, const char *name, int dim, Py_ssize_t size,
                     int at_least) {
    const Py_ssize_t got = view->shape[dim];
    if (at_least ? got >= size : got == size) return 0;
    PyErr_Format(PyExc_ValueError, "%s: dimension %d is %zd, %s%zd expected", name, dim, got,
                 at_least ? "at least " : "", size);
    return -1;
}

static inline int check_args(const char *function, Py_ssize_t nargs, Py_ssize_t expected) {
    if (nargs == expected) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, expected,
                 nargs);
    return -1;
}

/* Integer and float arguments; -1 with a Python error where one is not a number. */
static inline int as_i64(PyObject *obj, int64_t *value) {
    const long long v = PyLong_AsLongLong(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    *value = (int64_t)v;
    return 0;
}

static inline int as_i32(PyObject *obj, const char *name, int32_t *value) {
    int64_t v;
    if (as_i64(obj, &v) < 0) return -1;
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%s: %lld does not fit 32 bits", name, (long long)v);
        return -1;
    }
    *value = (int32_t)v;
    return 0;
}

static inline int as_f64(PyObject *obj, double *value) {
    *value = PyFloat_AsDouble(obj);
    return *value == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static inline int as_f32(PyObject *obj, float *value) {
    double v;
    if (as_f64(obj, &v) < 0) return -1;
    *value = (float)v;
    return 0;
}

/* A tensor's data_ptr() (an int; 0 or None: no buffer). */
static inline int as_address(PyObject *obj, void **value) {
    if (obj == Py_None) {
        *value = NULL;
        return 0;
    }
    *value = PyLong_AsVoidPtr(obj);
    return *value == NULL && PyErr_Occurred() ? -1 : 0;
}

static inline int in_range(const char *name, int64_t value, int64_t low, int64_t high) {
    if (value >= low && value <= high) return 0;
    PyErr_Format(PyExc_ValueError, "%s: %lld outside [%lld, %lld]", name, (long long)value,
                 (long long)low, (long long)high);
    return -1;
}

/* A module function `name` of `count` positional arguments (METH_FASTCALL): its body,
 * which follows the macro, borrows the arrays it reads into `b`; the wrapper releases them,
 * whatever the body returns. */
#define BINDING(name, count)                                                                    \
    static PyObject *name##_body(Borrowed *b, PyObject *const *args);                           \
    PyObject *py_##name(PyObject *self, PyObject *const *args, Py_ssize_t n) {           \
        (void)self;                                                                             \
        if (check_args(#name, n, count) < 0) return NULL;                                       \
        BORROWED(b);                                                                            \
        PyObject *result = name##_body(&b, args);                                               \
        release(&b);                                                                            \
        return result;                                                                          \
    }                                                                                           \
    static PyObject *name##_body(Borrowed *b, PyObject *const *args)

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL

#endif
