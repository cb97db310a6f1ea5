#!/usr/bin/env python3
"""Table of `vqalab demo` runs from their --out folders (result.json, metrics.jsonl): held-out
accuracy before/after GRPO (official VQA metric) and with mismatched images, wall time, and step
times (median of the SFT and GRPO steps, GRPO rollout/train parts), with wall-time and step-time
ratios against the first folder given (the baseline, e.g. the CPU run). Missing folders are skipped;
a run cut short (no result.json) still shows its step times.
    python3 scripts/gpu/demo-summary.py BASELINE_DIR OTHER_DIR...
"""
import json, os, statistics, sys

def load(d):
    r = {}
    p = os.path.join(d, 'result.json')
    if os.path.exists(p):
        r = json.load(open(p))
    rows = []
    m = os.path.join(d, 'metrics.jsonl')
    if os.path.exists(m):
        for line in open(m):
            try: rows.append(json.loads(line))
            except ValueError: pass
    med = lambda kind, key: statistics.median([x[key] for x in rows if x.get('kind') == kind and isinstance(x.get(key), (int, float))] or [float('nan')])
    n = lambda kind: sum(1 for x in rows if x.get('kind') == kind)
    mem = max([x.get('memoryMiB') or 0 for x in rows] or [0])
    return dict(result=r, sft=med('sft', 'stepSeconds'), grpo=med('grpo', 'stepSeconds'), rollout=med('grpo', 'rolloutSeconds'),
                train=med('grpo', 'trainSeconds'), nsft=n('sft'), ngrpo=n('grpo'), mem=mem, device=(r.get('recipe') or {}).get('device'),
                model=os.path.basename(str((r.get('recipe') or {}).get('model', '?'))))

runs = [(d, load(d)) for d in sys.argv[1:] if os.path.isdir(d)]
if not runs:
    print('no run folders'); sys.exit(0)
base = runs[0][1]
fmt = lambda x, f='%.3f': '-' if x is None or x != x else f % x
print('| run | device | model | warm start % | after GRPO % | mismatched images (warm/GRPO) % | wall s | SFT step s | GRPO step s | rollout s | train s | steps SFT/GRPO | host MiB | wall vs first | GRPO step vs first |')
print('|' + '---|' * 15)
for d, x in runs:
    r = x['result']
    ratio = lambda a, b: '-' if not a or not b or a != a or b != b else '%.2fx' % (a / b)
    print('| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %d/%d | %s | %s | %s |' % (
        os.path.basename(d), x['device'] or '?', x['model'], fmt(r.get('warmStartAccuracy'), '%.2f'), fmt(r.get('grpoAccuracy'), '%.2f'),
        fmt(r.get('warmStartMismatchedImageAccuracy'), '%.2f'), fmt(r.get('grpoMismatchedImageAccuracy'), '%.2f'), fmt(r.get('seconds'), '%.1f'),
        fmt(x['sft']), fmt(x['grpo']), fmt(x['rollout']), fmt(x['train']), x['nsft'], x['ngrpo'], fmt(x['mem'], '%.0f'),
        ratio(base['result'].get('seconds'), r.get('seconds')), ratio(base['grpo'], x['grpo'])))
print('\n(ratios: the first run\'s time / this run\'s time, >1 = faster than the first)')
