/** Rich displays: bundle builders, the display helpers, the live dashboard and the pure renderers. */
export * from './types.js';
export { bundleFor, sampleBundle, groupBundle, rewardsBundle, metricsBundle, datasetBundle } from './bundle.js';
// show, plot, browse, dashboard, rewardLab: at the package's top level (src/index.ts), so not repeated here.
export { toRuns } from './show.js';
export type { ShowOptions, PlotOptions, BrowseOptions } from './show.js';
export { samplePayload, type SampleExtras } from './sample.js';
export { Dashboard, thin } from './dashboard.js';
export type { DashboardOptions } from './dashboard.js';
export { imageRef, samplePng } from './image.js';
export type { ImageRefOptions } from './image.js';
export { setDisplaySink, getDisplaySink, emit, newDisplayId, DISPLAYED } from './output.js';
export { display, clearOutput, checkBundle, hasMimeBundle, MIME_BUNDLE } from './sink.js';
export type { ClearOptions, HasMimeBundle } from './sink.js';
export type { DisplaySink, DisplayOptions } from './output.js';
export { WIDGETS, renderHtml, renderError, staticHtml, isVendorMime, PayloadError, VQA_CSS } from './render/index.js';
export type { RenderOptions } from './render/index.js';
export { plotlyFigure, smooth, metricKeys } from './render/metrics.js';
export {
  comparisonBundles,
  comparisonMetrics,
  comparisonTable,
  comparisonTableBundle,
  comparisonText,
  showComparison,
} from './comparison.js';
export { completionsFrom, pearson, RewardTable, TIE_EPSILON } from './reward-lab.js';
export { metricsPoint, groupPayload, mostInformative, trainingDashboard } from './training.js';
export type { TrainingDashboard, GroupViewOptions, RunDashboardOptions } from './training.js';
