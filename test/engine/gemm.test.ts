/** The packed SGEMM against the naive triple loop, for every transpose, both kernels, edge shapes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/engine/native.js';
import { randn, rng } from './helpers.js';

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [6, 16, 3],
  [7, 17, 5],
  [37, 53, 29],
  [100, 5, 300],
  [200, 300, 513],
  [3, 4100, 9],
];

for (const kernel of ['avx2-fma', 'portable'] as const) {
  test(`sgemm (${kernel} kernel) equals the naive loop for every transpose and odd shapes`, (t) => {
    const a = native();
    const used = a._gemmKernel(kernel);
    if (used !== kernel) {
      t.skip(`this CPU has no ${kernel}`);
      a._gemmKernel('auto');
      return;
    }
    try {
      const r = rng(11);
      for (const [M, N, K] of shapes) {
        for (const ta of [false, true]) {
          for (const tb of [false, true]) {
            const lda = (ta ? M : K) + 3,
              ldb = (tb ? K : N) + 1,
              ldc = N + 2;
            const A = randn((ta ? K : M) * lda, r),
              B = randn((tb ? N : K) * ldb, r);
            const C0 = randn(M * ldc, r);
            for (const [alpha, beta] of [
              [1, 0],
              [0.5, 1],
              [-2, 0.25],
            ] as const) {
              const C1 = C0.slice(),
                C2 = C0.slice();
              a._sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
              a._sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc, true);
              for (let i = 0; i < M; i++) {
                for (let j = 0; j < N; j++) {
                  const d = Math.abs(C1[i * ldc + j]! - C2[i * ldc + j]!);
                  assert.ok(
                    d <= 1e-5 * Math.sqrt(K) * 4,
                    `M${M} N${N} K${K} ta${ta} tb${tb} a${alpha} b${beta} [${i},${j}]: ${C1[i * ldc + j]} vs ${C2[i * ldc + j]}`,
                  );
                }
                // the padding between rows is never written
                for (let j = N; j < ldc && i < M - 1; j++) assert.equal(C1[i * ldc + j], C0[i * ldc + j]);
              }
            }
          }
        }
      }
    } finally {
      a._gemmKernel('auto');
    }
  });
}

test('sgemm: a row of C does not depend on the other rows or on the thread count', () => {
  const a = native();
  const r = rng(12);
  const K = 70,
    N = 45;
  const A = randn(13 * K, r),
    B = randn(N * K, r);
  const full = new Float32Array(13 * N);
  a._sgemm(false, true, 13, N, K, 1, A, K, B, K, 0, full, N);
  const threads = a._threads();
  try {
    for (const nt of [1, 3]) {
      a._threads(nt);
      for (const row of [0, 5, 12]) {
        const one = new Float32Array(N);
        a._sgemm(false, true, 1, N, K, 1, A.subarray(row * K), K, B, K, 0, one, N);
        assert.deepEqual(one, full.subarray(row * N, (row + 1) * N), `row ${row} with ${nt} threads`);
      }
    }
  } finally {
    a._threads(threads);
  }
});

test('thread pool: resizing between jobs never replays an old job (regression)', () => {
  const a = native();
  const threads = a._threads();
  const r = rng(13);
  const A = randn(64 * 64, r),
    want = new Float32Array(64 * 64);
  a._sgemm(false, true, 64, 64, 64, 1, A, 64, A, 64, 0, want, 64);
  try {
    for (let k = 0; k < 40; k++) {
      assert.equal(a._threads(1 + (k % 4)), 1 + (k % 4));
      const C = new Float32Array(64 * 64);
      a._sgemm(false, true, 64, 64, 64, 1, A, 64, A, 64, 0, C, 64);
      assert.deepEqual(C, want);
    }
  } finally {
    a._threads(threads);
  }
});
