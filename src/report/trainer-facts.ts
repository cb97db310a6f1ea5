/**
 * What a training run tells its report, as a subscriber of the trainer's events
 * (src/grpo/events.ts): when training starts, its config, seeds, dataset fingerprints, the hash of
 * the starting weights, the engine's version and device; the SFT config; each checkpoint's hash;
 * each named evaluation; the final metrics of each run. Registered when this module loads (the
 * package entry loads it); a trainer made with `recordFacts: false` records nothing.
 */
import path from 'node:path';
import { registerTrainerPlugin, type TrainerCallback, type TrainerView } from '../grpo/events.js';
import { samplesFingerprint } from '../data/fingerprint.js';
import { deviceFact, engineVersion, weightsHash, weightsHashIfAny } from '../grpo/facts.js';
import { recordFacts, type ModelFact } from './facts.js';

export function trainerFacts(): TrainerCallback {
  return {
    async onTrainerStart(t: TrainerView) {
      const datasets = [
        { name: 'train', split: 'train', rows: t.train.length, fingerprint: samplesFingerprint(t.train) },
      ];
      for (const [name, set] of Object.entries(t.evalSets ?? {}))
        datasets.push({ name, split: name, rows: set.length, fingerprint: samplesFingerprint(set) });
      const dir = t.modelDir;
      const hash = await weightsHashIfAny(dir);
      const models: ModelFact[] =
        hash && dir
          ? [
              {
                name: path.basename(path.resolve(dir)),
                hash,
                path: path.resolve(dir),
                role: t.globalStep > 0 || t.sftSteps > 0 ? 'resumed' : 'base',
              },
            ]
          : [];
      recordFacts({
        configs: { grpo: { ...t.config } },
        seeds: { trainer: t.config.seed },
        datasets,
        models,
        versions: { engine: engineVersion(t.model) },
        devices: [deviceFact(t.model)],
        ...(t.model.device === 'cpu' ? {} : { tolerances: { '*': { rtol: 2e-2, atol: 1e-3 } } }),
      });
    },
    onSftBegin(_t, info) {
      recordFacts({ configs: { sft: { ...info } } });
    },
    onEvaluate(_t, summary, info) {
      if (!info.named || !Number.isFinite(summary.overall)) return;
      const metrics: Record<string, number> = { [`eval/${summary.split}@${info.at}`]: summary.overall };
      for (const [type, v] of Object.entries(summary.perAnswerType))
        if (Number.isFinite(v)) metrics[`eval/${summary.split}@${info.at}/${type}`] = v;
      recordFacts({ metrics });
    },
    async onSave(_t, dir, info) {
      const hash = await weightsHash(path.join(dir, 'model')).catch(() => undefined);
      if (hash)
        recordFacts({ models: [{ name: path.basename(dir), hash, path: dir, role: 'checkpoint', step: info.step }] });
    },
    // Later runs of the same trainer overwrite these: the stamp keeps the last.
    onRunEnd(t, result) {
      if (result.error) return;
      const last = t.metrics.history.filter((m) => m.kind === 'grpo').at(-1);
      const metrics: Record<string, number> = { 'train/steps': t.globalStep };
      if (last) {
        for (const [k, v] of [
          ['train/reward', last.rewardMean],
          ['train/accuracy', last.accuracy],
          ['train/entropy', last.entropy],
        ] as const) {
          if (Number.isFinite(v)) metrics[k] = v;
        }
      }
      recordFacts({ metrics, notes: { stoppedBy: result.stoppedBy } });
    },
  };
}

registerTrainerPlugin({
  name: 'facts',
  forTrainer: (t) => (t.recordsFacts ? trainerFacts() : undefined),
});
