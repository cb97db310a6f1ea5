"""Copies engine fixture cases with every F32 weight (policy, reference, adapter) rounded to bf16 (nearest even), keeping
transformers' expected outputs: how far the rounding of the weights alone moves the CPU engine (bench/results/families-h200-2026-12-07).

  python3 scripts/round-fixture-bf16.py test/fixtures/engine OUT CASE [CASE...]
  node bin/vqalab.js check-parity OUT --json > p.json && python3 scripts/parity-table.py p.json
"""
import json, os, shutil, struct, sys
import numpy as np

def round_file(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    for k, v in header.items():
        if k == '__metadata__' or v['dtype'] != 'F32':
            continue
        a, b = v['data_offsets']
        x = np.frombuffer(bytes(data[a:b]), dtype=np.uint32).copy()
        # round to nearest even at bit 16
        x = ((x + 0x7FFF + ((x >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
        data[a:b] = x.tobytes()
    with open(path, 'r+b') as f:
        f.seek(8 + n)
        f.write(data)

src, dst = sys.argv[1], sys.argv[2]
for case in sys.argv[3:]:
    d = os.path.join(dst, case)
    shutil.copytree(os.path.join(src, case), d)
    for sub in ('policy', 'reference', 'adapter'):
        p = os.path.join(d, sub)
        if os.path.isdir(p):
            for f in os.listdir(p):
                if f.endswith('.safetensors'):
                    round_file(os.path.join(p, f))
