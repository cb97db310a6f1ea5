/**
 * How a run tells its report what it used: cells and trainers call `recordFacts({...})` (or the
 * narrower helpers) with configs, seeds, dataset fingerprints, model/checkpoint hashes, versions,
 * devices and final metrics. Each call becomes one output carrying only the MIME type
 * `application/vnd.vqalab.stamp.v1+json` (`STAMP_MIME`, src/display/types.ts): it is saved with the
 * notebook, where the report runner and `vqalab report export` gather every such output into the
 * header stamp, but shown nowhere: no text/plain fallback, so viewers without the extension
 * (nbconvert, GitHub) have nothing to print, and the JupyterLab extension's renderer for the type
 * draws nothing and hides the output item. Facts belong in the stamp, not in the cell.
 *
 * This module knows nothing about Jupyter: it hands the MIME bundle to the display sink
 * (src/display/sink.ts), which the vqalab kernel installs; in a plain script there is no sink and
 * the facts are only kept in memory (`recordedFacts()`), so the same trainer code runs in both.
 *
 * Any kernel can take part: a Python cell writes the same MIME type, alone, with
 * `IPython.display.display({MIME: facts}, raw=True)`.
 */
import { display } from '../display/sink.js';
import { STAMP_MIME } from '../display/types.js';

export { STAMP_MIME };

export interface DatasetFact {
  name: string;
  /** A content hash of the data as read (e.g. sha256 of the Parquet file or of the sample ids). */
  fingerprint: string;
  path?: string;
  rows?: number;
  split?: string;
}

export interface ModelFact {
  name: string;
  /** sha256 (or another stated hash) of the weights file(s) or checkpoint directory. */
  hash: string;
  path?: string;
  /** 'base' | 'checkpoint' | 'reference' | … */
  role?: string;
  step?: number;
}

export interface DeviceFact {
  /** 'cpu' | 'cuda' | … ; a run that recorded any non-CPU device is compared with GPU tolerances. */
  kind: string;
  name?: string;
  count?: number;
  driver?: string;
  memoryBytes?: number;
}

export interface Tolerance {
  /** |a - b| <= atol + rtol * |b| */
  rtol: number;
  atol: number;
}

export interface StampFacts {
  /** Named configs: `{ grpo: {...}, sampler: {...} }`. Secret-looking fields are redacted in reports. */
  configs?: Record<string, unknown>;
  /** Named seeds: `{ trainer: 1234, data: 7 }`. */
  seeds?: Record<string, number>;
  datasets?: DatasetFact[];
  models?: ModelFact[];
  /** Component versions: `{ engine: '0.1.0 (cuda 13.0)', tokenizer: '…' }`. */
  versions?: Record<string, string>;
  devices?: DeviceFact[];
  /** Final or checkpoint metrics that `vqalab report verify` compares: name → number. */
  metrics?: Record<string, number>;
  /** Per-metric tolerances for GPU runs (metric name or '*' → tolerance); CPU runs compare exactly. */
  tolerances?: Record<string, Tolerance>;
  /** Anything else worth a line in the stamp. */
  notes?: Record<string, string | number | boolean>;
}

const kept: StampFacts[] = [];

/**
 * The MIME bundle one `recordFacts` call produces: the facts under `STAMP_MIME` and nothing else.
 * A text/plain summary would be what nbconvert, GitHub and JupyterLab without the extension print.
 */
export function factsBundle(facts: StampFacts): Record<string, unknown> {
  return { [STAMP_MIME]: structuredClone(facts) };
}

function checkFacts(facts: StampFacts): void {
  if (!facts || typeof facts !== 'object') throw new TypeError('Expected an object for facts');
  for (const [k, v] of Object.entries(facts.seeds ?? {})) {
    if (!Number.isInteger(v))
      throw new TypeError(`Expected integer for facts.seeds.${k} but received ${JSON.stringify(v)}`);
  }
  for (const [k, v] of Object.entries(facts.metrics ?? {})) {
    if (typeof v !== 'number')
      throw new TypeError(`Expected number for facts.metrics.${k} but received ${JSON.stringify(v)}`);
  }
  for (const [i, d] of (facts.datasets ?? []).entries()) {
    if (typeof d?.name !== 'string' || typeof d?.fingerprint !== 'string')
      throw new TypeError(`Expected {name, fingerprint} strings for facts.datasets[${i}]`);
  }
  for (const [i, m] of (facts.models ?? []).entries()) {
    if (typeof m?.name !== 'string' || typeof m?.hash !== 'string')
      throw new TypeError(`Expected {name, hash} strings for facts.models[${i}]`);
  }
}

/** Record facts for the report stamp. Safe to call from a script: facts are then kept in memory. */
export function recordFacts(facts: StampFacts): void {
  checkFacts(facts);
  kept.push(structuredClone(facts));
  display(factsBundle(facts));
}

export const recordConfig = (name: string, config: unknown) => recordFacts({ configs: { [name]: config } });
export const recordSeed = (name: string, seed: number) => recordFacts({ seeds: { [name]: seed } });
export const recordDataset = (d: DatasetFact) => recordFacts({ datasets: [d] });
export const recordModel = (m: ModelFact) => recordFacts({ models: [m] });
export const recordMetrics = (metrics: Record<string, number>) => recordFacts({ metrics });

/** Every fact recorded in this process, in order (script use, tests). */
export function recordedFacts(): StampFacts[] {
  return structuredClone(kept);
}

/** Merge fact records in order: later configs/seeds/versions/metrics of the same name win; lists append (deduplicated). */
export function mergeFacts(records: StampFacts[]): StampFacts {
  const out: Required<StampFacts> = {
    configs: {},
    seeds: {},
    datasets: [],
    models: [],
    versions: {},
    devices: [],
    metrics: {},
    tolerances: {},
    notes: {},
  };
  const seen = new Set<string>();
  for (const r of records) {
    Object.assign(out.configs, r.configs);
    Object.assign(out.seeds, r.seeds);
    Object.assign(out.versions, r.versions);
    Object.assign(out.metrics, r.metrics);
    Object.assign(out.tolerances, r.tolerances);
    Object.assign(out.notes, r.notes);
    for (const [list, items] of [
      [out.datasets, r.datasets],
      [out.models, r.models],
      [out.devices, r.devices],
    ] as [unknown[], unknown[] | undefined][]) {
      for (const item of items ?? []) {
        const key = JSON.stringify(item);
        if (!seen.has(key)) {
          seen.add(key);
          list.push(item);
        }
      }
    }
  }
  return out;
}
