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

// Whether the machine has a core for every runnable thread right now (read from /proc/loadavg at
// most every 2 ms; true where it cannot be read). A waiter that spins while threads outnumber
// cores keeps the peer it waits for - or another namespace's or container's rank on this
// machine - off a core: it should sleep instead.
bool CoresToSpare();

}  // namespace cohort
