"""The tables and ratios of scripts/bench_step.py, from the results of one invocation (ratios only between numbers
measured together: these machines are noisy)."""

from __future__ import annotations

TARGET_MEMORY_RATIO, TARGET_STEP_RATIO = 1.10, 3.5
TARGET_LEAN_MEMORY, TARGET_AUTO_TIME = 0.4, 0.75


def label(r: dict) -> str:
    parts = [r["generator"] if isinstance(r["generator"], str) else "?", r.get("classifiers", ""),
             "two-stage" if r.get("two_stage") else "single", f"ckpt={r.get('checkpointing')}"]
    if r.get("compile"):
        parts.append("compile")
    if r.get("classifier_ckpt"):
        parts.append("clf-ckpt")
    return " ".join(str(p) for p in parts)


def report(results: list[dict], suite: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title="one optimisation step (16 cutouts, loss on the last 3 steps)")
    for col in ("generator", "classifiers", "backward", "ckpt", "T", "no-grad s", "step s", "step/no-grad",
                "autograd MB", "step rise MB", "peak MB"):
        table.add_column(col)
    for r in results:
        if "error" in r:
            table.add_row(str(r["generator"]), r["classifiers"], "", str(r["checkpointing"]), str(r["T"]), "error",
                          r["error"][:60], "", "", "", "")
            continue
        backward = ("two-stage" if r["two_stage"] else "single") + (" +clf-ckpt" if r["classifier_ckpt"] else "")
        ckpt = r["checkpointing"] + (" +compile" if r["compile"] else "")
        peak = r.get("peak_cuda_mb", r["peak_rss_mb"])
        rise = r.get("step_cuda_rise_mb", r["step_rss_rise_mb"])
        def fmt(k, spec, r=r):
            return format(r[k], spec) if k in r else "-"

        table.add_row(r["generator"], r["classifiers"], backward, ckpt, str(r["T"]), fmt("nograd_s", ".3f"),
                      fmt("step_s", ".3f"), fmt("step_ratio", ".2f"), f"{r['autograd_peak_mb']:.1f}", f"{rise:.0f}",
                      f"{peak:.0f}")
    console.print(table)
    ok = [r for r in results if "error" not in r]
    if suite == "lean":
        _lean_summary(console, ok)
        return
    for gen in dict.fromkeys(r["generator"] for r in ok):
        for ckpt in ("true", "false", "auto"):
            rows = {r["T"]: r for r in ok if r["generator"] == gen and r["checkpointing"] == ckpt}
            if len(rows) < 2:
                continue
            a, b = rows[min(rows)], rows[max(rows)]
            peak = "peak_cuda_mb" if "peak_cuda_mb" in a else "peak_rss_mb"
            line = (f"{gen} checkpointing={ckpt}: autograd memory T={b['T']}/T={a['T']} = "
                    f"{b['autograd_peak_mb'] / a['autograd_peak_mb']:.2f}, peak memory = {b[peak] / a[peak]:.2f} "
                    f"(target ≤ {TARGET_MEMORY_RATIO} with checkpointing)")
            if "step_ratio" in b:
                line += f"; step/no-grad at T={b['T']}: {b['step_ratio']:.2f} (target ≤ {TARGET_STEP_RATIO})"
            console.print(line)


def _lean_summary(console, ok: list[dict]) -> None:
    mem = [r for r in ok if "step_s" not in r and not r["classifier_ckpt"]]
    for setup in dict.fromkeys((r["generator"], r["classifiers"]) for r in mem):
        rows = {(r["T"], r["two_stage"]): r for r in mem if (r["generator"], r["classifiers"]) == setup}
        for T in sorted({t for t, _ in rows}):
            if (T, False) in rows and (T, True) in rows:
                a, b = rows[(T, False)], rows[(T, True)]
                rise = "step_cuda_rise_mb" if "step_cuda_rise_mb" in a else "step_rss_rise_mb"
                console.print(f"{setup[0]} {setup[1]} T={T}: added memory two-stage/single = "
                              f"{b[rise]:.0f}/{a[rise]:.0f} MB = {b[rise] / a[rise]:.2f}; autograd "
                              f"{b['autograd_peak_mb']:.0f}/{a['autograd_peak_mb']:.0f} MB = "
                              f"{b['autograd_peak_mb'] / a['autograd_peak_mb']:.2f}"
                              + (f" (target ≤ {TARGET_LEAN_MEMORY} at T=20 with resnet18)"
                                 if setup[1] == "resnet18" and T == 20 else ""))
        Ts = sorted({t for t, s in rows if s})
        if len(Ts) >= 2:
            lo, hi = rows[(Ts[0], True)], rows[(Ts[-1], True)]
            peak = "peak_cuda_mb" if "peak_cuda_mb" in lo else "peak_rss_mb"
            console.print(f"{setup[0]} {setup[1]} two-stage: peak memory T={Ts[-1]}/T={Ts[0]} = "
                          f"{hi[peak] / lo[peak]:.2f} ({hi[peak]:.0f}/{lo[peak]:.0f} MB; target ≤ "
                          f"{TARGET_MEMORY_RATIO}), autograd {hi['autograd_peak_mb'] / lo['autograd_peak_mb']:.2f}")
    ck = {r["two_stage"]: r for r in ok if r["classifier_ckpt"] and "step_s" not in r}
    for two_stage, r in ck.items():
        base = next((b for b in mem if b["classifiers"] == r["classifiers"] and b["T"] == r["T"]
                     and b["two_stage"] == two_stage), None)
        if base:
            rise = "step_cuda_rise_mb" if "step_cuda_rise_mb" in r else "step_rss_rise_mb"
            console.print(f"classifier grad checkpointing ({r['classifiers']}, "
                          f"{'two-stage' if two_stage else 'single'}): added memory {r[rise]:.0f} vs "
                          f"{base[rise]:.0f} MB without, autograd {r['autograd_peak_mb']:.0f} vs "
                          f"{base['autograd_peak_mb']:.0f} MB")
    times = {(r["T"], r["classifiers"], r["classifier_ckpt"], r["checkpointing"], r["two_stage"], r["compile"]): r
             for r in ok if "step_s" in r}
    for (T, pair, _, *key), r in times.items():
        ref = times.get((T, pair, False, "true", True, False))
        if ref:
            console.print(f"T={T} {label(r)}: step {r['step_s']:.2f} s = {r['step_s'] / ref['step_s']:.2f}x "
                          f"two-stage ckpt=true; step/no-grad {r['step_ratio']:.2f}; first no-grad pass "
                          f"{r['warmup_s']:.1f} s, first step {r.get('first_step_s', float('nan')):.1f} s"
                          + (f"; plain steps {r['plain_steps']}, plain decode {r.get('plain_decode')}"
                             f" (target ≤ {TARGET_AUTO_TIME})" if key == ["auto", True, False] else ""))
