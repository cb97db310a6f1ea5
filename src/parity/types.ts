/**
 * The check-parity framework: a parity case is a folder holding `meta.json` plus whatever its
 * checkers read (images, `inputs.safetensors`, checkpoints, `expected.safetensors`). Each checker
 * says which cases it applies to and returns measured errors against tolerances; `vqalab
 * check-parity DIR` runs every applicable checker on every case under DIR and exits non-zero when
 * any measurement is beyond its tolerance.
 *
 * To add a checker: implement {@link ParityChecker} in its own module under src/parity/ and list
 * it in src/parity/checkers.ts (one line).
 */

/** Options from the command line, passed to every checker. */
export interface ParityOptions {
  /** Where checkers that compute run: "cpu" (default) or "cuda"/"cuda:N". */
  device: string;
  /** Free-form extra options (`--set key=value`), for checker-specific knobs. */
  settings: Record<string, string>;
}

/** One measured quantity of one case, e.g. the max abs error of one image's patches. */
export interface ParityMeasurement {
  /** What was measured, e.g. "odd_61x47.pixel_values max_abs". */
  name: string;
  /** The measured value (an error: lower is better). NaN counts as a failure. */
  value: number;
  /** Largest acceptable value. */
  tolerance: number;
  /** Context for the reader (e.g. "resized 61x47 -> 56x56; mean_abs 0.0001"). */
  note?: string;
}

export interface ParityChecker {
  /** Short name shown in reports, e.g. "vision". */
  name: string;
  /** True when this checker has something to check in the case (decided from meta.json and files). */
  applies(caseDir: string, meta: Record<string, unknown>): boolean;
  /** Measure; throw (naming the file and field) when the case itself is malformed. */
  check(caseDir: string, meta: Record<string, unknown>, options: ParityOptions): Promise<ParityMeasurement[]>;
}

/** The outcome of one checker on one case. */
export interface ParityResult {
  checker: string;
  /** The case folder, relative to the DIR given on the command line. */
  caseName: string;
  caseDir: string;
  measurements: ParityMeasurement[];
  /** Set when the checker threw; the case then fails. */
  error?: string;
  ok: boolean;
}

/** A measurement passes when its value is a number within tolerance. */
export function withinTolerance(m: ParityMeasurement): boolean {
  return Number.isFinite(m.value) && m.value <= m.tolerance;
}
