// The Python module golden_fast._C. It holds no functions: importing it runs the static
// TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL registrations of every csrc/<op>.cpp, after which the
// ops are torch.ops.golden_fast.<op>. The constants below tell golden_fast.native how it was built
// and which CPU kernels run, so nothing has to probe a GPU to find out (importing golden_fast must
// never touch a GPU). Op files must not
// define PyInit__C.

#include <Python.h>

#include "simd.h"

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif
#define GF_CONCAT_(a, b) a##b
#define GF_CONCAT(a, b) GF_CONCAT_(a, b)
#define GF_STR_(a) #a
#define GF_STR(a) GF_STR_(a)

extern "C" PyMODINIT_FUNC GF_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      GF_STR(TORCH_EXTENSION_NAME),
      "golden-fast native ops (C++/OpenMP, CUDA when built); registered as torch.ops.golden_fast.*",
      -1,
      nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef GOLDEN_FAST_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
#ifdef _OPENMP
  const long with_openmp = 1;
#else
  const long with_openmp = 0;
#endif
  // The instruction set of the CPU kernels: the best this CPU has, or lower if GOLDEN_FAST_CPU_ISA says.
  const char* cpu_isa = golden_fast::simd::isa_name(golden_fast::simd::active_isa());
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) < 0 ||
      PyModule_AddIntConstant(module, "WITH_OPENMP", with_openmp) < 0 ||
      PyModule_AddStringConstant(module, "CPU_ISA", cpu_isa) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
