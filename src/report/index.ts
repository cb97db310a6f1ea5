/**
 * Reports as a library (what `vqalab report` uses): the Jupyter protocol client, the runner, the
 * exporter and verify. The runtime's top-level export carries only the light facts API
 * (`report.recordFacts` …), so importing vqalab in a notebook does not load this.
 */
export * from './facts.js';
export {
  Kernel,
  KernelDiedError,
  KernelTimeoutError,
  type ExecuteOptions,
  type ExecuteOutcome,
  type KernelStartOptions,
} from './protocol/kernel.js';
export { findKernelSpecs, getKernelSpec, jupyterDataDirs, type KernelSpec } from '../jupyter/kernelspec.js';
export { DisplayRegistry, OutputCollector } from './protocol/outputs.js';
export { runNotebook, writeReport, exportNotebook, sourceNotebook, type RunOptions, type RunResult } from './runner.js';
export { verifyReport, type VerifyOptions, type VerifyResult } from './verify.js';
export { renderReport, readReportData, type ReportData } from './html.js';
export { extractMetrics, compareMetrics, formatDiffs, METRICS_MIME, type MetricTable } from './metrics.js';
export { Redactor, REDACTED } from './redact.js';
export { injectParameters, parseParamValue, type Params } from './params.js';
export type { Stamp } from './stamp.js';
