/* The kernels as a Python extension module, one per build variant (setup.py compiles the same
 * sources once per x86-64 level; streamlearn.kernels.cpu.binding imports the best one this CPU
 * runs). The binding is on CPython's C API: bind_host.c's functions (the host-side kernels) and
 * bind_step.c's `Step` type take numpy arrays through the buffer protocol and check them
 * (args.h); this file registers them. Tensors whose buffers torch keeps (the reservoir's rows,
 * the error memory's ring) come as their data_ptr() ints, with the sizes Python knows them by.
 * The kernels' arithmetic is in their own files; nothing here computes.
 *
 * Each module also says which variant it is (`variant`) and which x86-64 level this CPU runs
 * (`cpu_level`: 4, 3, 2 or 1; 0 elsewhere), read from the baseline module, the one every CPU of
 * its architecture runs, before a higher variant is imported. The buffer protocol is not in
 * Python 3.10's limited API: one build per CPython version. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bindings.h"
#include "kernels.h"

#if !defined(KERNELS_MODULE) || !defined(KERNELS_VARIANT)
#error "setup.py defines KERNELS_MODULE (the module's name) and KERNELS_VARIANT"
#endif
#define JOIN(a, b) a##b
#define INIT(name) JOIN(PyInit_, name)

/* The highest x86-64 level this CPU and its operating system run (the OS must save the AVX
 * and AVX-512 registers, which the compiler's CPU check includes). */
static int cpu_level(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
    if (__builtin_cpu_supports("x86-64-v2")) return 2;
    return 1;
#else
    return 0;
#endif
}

/* -- the module ----------------------------------------------------------------------------- */

static PyMethodDef functions[] = {
    {"features_standardize", FASTCALL(py_features_standardize), "See bind_host.c."},
    {"features_observe", FASTCALL(py_features_observe), "See bind_host.c."},
    {"drift_update", FASTCALL(py_drift_update), "See bind_host.c."},
    {"reservoir_insert", FASTCALL(py_reservoir_insert), "See bind_host.c."},
    {"uniform_draws", FASTCALL(py_uniform_draws), "See bind_host.c."},
    {"memory_compensate", FASTCALL(py_memory_compensate), "See bind_host.c."},
    {"memory_store", FASTCALL(py_memory_store), "See bind_host.c."},
    {"linear_predict", FASTCALL(py_linear_predict), "See bind_host.c."},
    {"linear_learn", FASTCALL(py_linear_learn), "See bind_host.c."},
    {"hedge_hits", FASTCALL(py_hedge_hits), "See bind_host.c."},
    {"mix_gated", FASTCALL(py_mix_gated), "See bind_host.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    NAME(KERNELS_MODULE),
    "The compiled CPU kernels, build variant " KERNELS_VARIANT
    " (loaded by streamlearn.kernels.cpu.binding).",
    -1,
    functions,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC INIT(KERNELS_MODULE)(void) {
    if (PyType_Ready(&StepType) < 0) return NULL;
    PyObject *self = PyModule_Create(&module);
    if (self == NULL) return NULL;
    if (PyModule_AddStringConstant(self, "variant", KERNELS_VARIANT) < 0 ||
        PyModule_AddIntConstant(self, "cpu_level", cpu_level()) < 0 ||
        PyModule_AddIntConstant(self, "MAX_LAYERS", MAX_LAYERS) < 0 ||
        PyModule_AddObjectRef(self, "Step", (PyObject *)&StepType) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}
