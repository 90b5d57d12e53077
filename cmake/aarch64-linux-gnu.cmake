# Cross-compiling cohort for aarch64 (Grace, Graviton) with Debian's g++-aarch64-linux-gnu,
# against the arm64 builds of its libraries unpacked into COHORT_AARCH64_SYSROOT by
# scripts/aarch64-sysroot (Abseil, OpenSSL, hwloc and their dependencies; the C and C++
# runtimes come with the cross compiler). Used by scripts/check-aarch64 (make check-aarch64).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT COHORT_AARCH64_SYSROOT)
  set(COHORT_AARCH64_SYSROOT "$ENV{COHORT_AARCH64_SYSROOT}")
endif()
if(NOT IS_DIRECTORY "${COHORT_AARCH64_SYSROOT}/usr/lib/aarch64-linux-gnu")
  message(FATAL_ERROR "COHORT_AARCH64_SYSROOT=\"${COHORT_AARCH64_SYSROOT}\" holds no arm64 "
                      "libraries; run scripts/aarch64-sysroot first")
endif()
# Try-compiles (CMake's compiler checks) see the same variable.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES COHORT_AARCH64_SYSROOT)

# Libraries, headers and CMake packages come from the unpacked arm64 tree only; programs
# (pkg-config, the compilers) from this machine.
set(CMAKE_FIND_ROOT_PATH "${COHORT_AARCH64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# The arch-specific headers (OpenSSL's configuration.h) and the libraries' own dependencies
# (libabsl_* on each other, libhwloc on libudev) for the linker.
set(CMAKE_C_FLAGS_INIT "-isystem ${COHORT_AARCH64_SYSROOT}/usr/include/aarch64-linux-gnu")
set(CMAKE_CXX_FLAGS_INIT "-isystem ${COHORT_AARCH64_SYSROOT}/usr/include/aarch64-linux-gnu")
# libcurl's own dependencies (nghttp2, gnutls, krb5, ...) are not in the sysroot: the check
# links against libcurl without them (nothing is run), hence --allow-shlib-undefined.
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "-Wl,-rpath-link,${COHORT_AARCH64_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,--allow-shlib-undefined")

# pkg-config (hwloc) reads the arm64 .pc files and prefixes their paths with the tree.
set(ENV{PKG_CONFIG_LIBDIR}
    "${COHORT_AARCH64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${COHORT_AARCH64_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${COHORT_AARCH64_SYSROOT}")
