/* What the module registers (module.c): the host-side kernels' functions (bind_host.c) and
 * the Step type (bind_step.c). */
#ifndef STREAMLEARN_BINDINGS_H
#define STREAMLEARN_BINDINGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUNCTION(name) PyObject *py_##name(PyObject *self, PyObject *const *args, Py_ssize_t n)
FUNCTION(features_standardize);
FUNCTION(features_observe);
FUNCTION(drift_update);
FUNCTION(reservoir_insert);
FUNCTION(uniform_draws);
FUNCTION(memory_compensate);
FUNCTION(memory_store);
FUNCTION(linear_predict);
FUNCTION(linear_learn);
FUNCTION(hedge_hits);
FUNCTION(mix_gated);
#undef FUNCTION

extern PyTypeObject StepType;

/* The module's name, which setup.py defines per variant (KERNELS_MODULE), as a string. */
#define TEXT(name) #name
#define NAME(name) TEXT(name)

#endif
