"""Prints, as `key=value` lines for CMake, where the interpreter's torch lives and how it was built.

Run by python/CMakeLists.txt with the interpreter the extension is built for (COHORT_PYTHON).
Exits non-zero (with the reason on stderr) when torch cannot be imported.
"""
import os
import sys
import sysconfig

try:
    import torch
    import torch.utils.cpp_extension as cpp_extension
except Exception as error:  # noqa: BLE001 - any failure means "no torch here"
    sys.stderr.write(f"cannot import torch with {sys.executable}: {error}\n")
    sys.exit(1)

torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
include_dirs = cpp_extension.include_paths()
library_dirs = cpp_extension.library_paths()
major, minor = (int(part) for part in torch.__version__.split(".")[:2])
bundled_pybind11 = os.path.isdir(os.path.join(torch_dir, "include", "pybind11"))

values = {
    "VERSION": torch.__version__,
    "VERSION_MAJOR": major,
    "VERSION_MINOR": minor,
    "INCLUDE_DIRS": ";".join(include_dirs),
    "LIBRARY_DIRS": ";".join(library_dirs),
    "CXX11_ABI": int(bool(torch._C._GLIBCXX_USE_CXX11_ABI)),
    "CUDA": torch.version.cuda or "",
    "BUNDLED_PYBIND11": int(bundled_pybind11),
    "PYTHON_INCLUDE": sysconfig.get_paths()["include"],
    "EXT_SUFFIX": sysconfig.get_config_var("EXT_SUFFIX"),
    "PURELIB": sysconfig.get_paths()["purelib"],
}
for key, value in values.items():
    print(f"{key}={value}")
