"""Memory meters of the benchmarks (Linux): the process's resident set, its peak (VmHWM, resettable), and the bytes
autograd saves for backward. On CPU run with ``MALLOC_MMAP_THRESHOLD_=65536``: otherwise glibc keeps freed heap pages
and RSS creeps with work that holds no tensor."""

from __future__ import annotations

import os
import weakref


def rss_mb() -> float:
    """Resident set size now, MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SavedTensorMeter:
    """Bytes autograd holds for backward: unique storages packed by saved-tensor hooks, alive until their graph
    node is freed; ``peak`` is the most alive at once. Weights (frozen, present anyway) are not counted."""

    def __init__(self, *modules):
        self.weights = {t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}
        self.alive: dict[int, list[int]] = {}
        self.current = self.peak = 0

    class _Holder:
        __slots__ = ("__weakref__", "tensor")

    def _release(self, ptr: int) -> None:
        entry = self.alive[ptr]
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self.alive[ptr]

    def pack(self, t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self.weights:
            return t
        holder = self._Holder()
        holder.tensor = t
        if ptr not in self.alive:
            self.alive[ptr] = [0, storage.nbytes()]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.alive[ptr][0] += 1
        weakref.finalize(holder, self._release, ptr)
        return holder

    @staticmethod
    def unpack(h):
        return h.tensor if isinstance(h, SavedTensorMeter._Holder) else h

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
