/* The kernels as an importable Python extension module, one per build variant (setup.py
 * compiles the same sources once per x86-64 level): the package finds the variant's file with
 * importlib and calls the kernels through ctypes on it (binding.py), so nothing here wraps
 * them. Each module says which variant it is (`variant`) and which x86-64 level this CPU runs
 * (`cpu_level`: 4, 3, 2 or 1; 0 elsewhere), read from the baseline module, the one every CPU
 * of its architecture runs, before a higher variant is loaded. Limited API: one build serves
 * every CPython from 3.10 on. */
#define Py_LIMITED_API 0x030A0000
#include <Python.h>

#if !defined(KERNELS_MODULE) || !defined(KERNELS_VARIANT)
#error "setup.py defines KERNELS_MODULE (the module's name) and KERNELS_VARIANT"
#endif
#define JOIN(a, b) a##b
#define INIT(name) JOIN(PyInit_, name)
#define TEXT(name) #name
#define NAME(name) TEXT(name)

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

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    NAME(KERNELS_MODULE),
    "The compiled CPU kernels, build variant " KERNELS_VARIANT
    " (called through ctypes: streamlearn.kernels.cpu.binding).",
    -1,
    NULL,
};

PyMODINIT_FUNC INIT(KERNELS_MODULE)(void) {
    PyObject *self = PyModule_Create(&module);
    if (self == NULL) return NULL;
    if (PyModule_AddStringConstant(self, "variant", KERNELS_VARIANT) < 0 ||
        PyModule_AddIntConstant(self, "cpu_level", cpu_level()) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}
