/**
 * The scene knobs of the synthetic set (shapeCount, shapeSize): the embedded demo uses one large
 * shape per image so the tiny model can learn to read it. Counts and radii stay in range, the
 * options reach the Parquet metadata, and bad values are refused with the usual messages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { synthSamples, writeSynth } from '../../src/data/synth.js';
import { readParquetTable } from '../../src/data/parquet.js';

test("shapeCount and shapeSize override the difficulty's scenes", async () => {
  const counts = new Set<number>();
  const families = new Set<string>();
  for await (const { scene, sample } of synthSamples({
    images: 40,
    seed: 4,
    shapeCount: [1, 2],
    shapeSize: [0.18, 0.22],
    families: ['color', 'shape'],
  })) {
    counts.add(scene.shapes.length);
    families.add(String((sample.extra as { family: string }).family));
    for (const s of scene.shapes)
      assert.ok(s.r >= Math.round(112 * 0.18) && s.r <= Math.round(112 * 0.22), `radius ${s.r}`);
  }
  assert.deepEqual([...counts].sort(), [1, 2]);
  assert.deepEqual([...families].sort(), ['color', 'shape']);
  for await (const { scene } of synthSamples({ images: 10, seed: 4, shapeCount: [1, 1] }))
    assert.equal(scene.shapes.length, 1);
  // Without the knobs, easy scenes keep 2–4 shapes.
  for await (const { scene } of synthSamples({ images: 10, seed: 4 }))
    assert.ok(scene.shapes.length >= 2 && scene.shapes.length <= 4);
});

test('the knobs are recorded in the Parquet metadata; bad values are refused', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vqalab-synth-scenes-'));
  try {
    const r = await writeSynth(path.join(dir, 'out'), {
      images: 3,
      seed: 1,
      shapeCount: [1, 1],
      shapeSize: [0.2, 0.2],
      quiet: true,
    });
    const { metadata } = await readParquetTable(r.parquet);
    const options = JSON.parse(metadata['vqalab.synth.options']!) as Record<string, unknown>;
    assert.deepEqual(
      [options.shapeCount, options.shapeSize],
      [
        [1, 1],
        [0.2, 0.2],
      ],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const refuse = async (o: object, message: string) => {
    await assert.rejects(
      async () => {
        for await (const _ of synthSamples(o)) break;
      },
      { message },
    );
  };
  await refuse(
    { shapeCount: [3, 1] },
    'Expected integer between 3 and 10 for shapeCount[1] but received 1 of type number',
  );
  await refuse(
    { shapeCount: [0, 2] },
    'Expected integer between 1 and 10 for shapeCount[0] but received 0 of type number',
  );
  await refuse(
    { shapeCount: 2 },
    'Expected a [min, max] pair of integers for shapeCount but received 2 of type number',
  );
  await refuse(
    { shapeSize: [0.3] },
    'Expected a [min, max] pair of radius fractions for shapeSize but received an array of length 1',
  );
  await refuse(
    { shapeSize: [0.01, 0.2] },
    'Expected number between 0.02 and 0.45 for shapeSize[0] but received 0.01 of type number',
  );
});
