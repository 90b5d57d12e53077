// CpuRelax: the hint a spin loop gives the core between polls of shared memory, per architecture
// (x86 `pause`, aarch64 `isb`, which Grace and Neoverse cores use as their short back-off), with
// a plain compiler barrier elsewhere. Used by the waits that poll the shared-memory lane.
#pragma once

namespace cohort {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("isb" ::: "memory");
#else
  asm volatile("" ::: "memory");
#endif
}

}  // namespace cohort
