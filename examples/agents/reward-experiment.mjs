// The example agent's own reward under GRPO on CPU, with the answers of every attempt per turn
// (docs/agents.md, "The example agent's reward"). Run from the repository root after npm run build:
//   G=6 node examples/agents/reward-experiment.mjs STEPS LR SFT_STEPS IMAGES [AGENT_ENV=V,...]
// e.g. G=6 node examples/agents/reward-experiment.mjs 12 3e-3 5 4     (the vote, a short warm start)
//      G=4 node examples/agents/reward-experiment.mjs 8 5e-4 25 4 AGENT_FINAL=last   (the earlier agent)
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadModel } from '../../dist/src/engine/index.js';
import { Trainer } from '../../dist/src/grpo/trainer.js';
import { DEFAULT_MODEL_DIR } from '../../dist/src/model/default.js';
import { vqaAccuracy } from '../../dist/src/reward/basic.js';
import { synthSamples } from '../../dist/src/data/synth.js';
import { VlmTokenizer } from '../../dist/src/text/tokenizer.js';
import { Qwen2VLImageProcessor } from '../../dist/src/vision/qwen2vl.js';
import { AgentTraining } from '../../dist/src/gateway/loop.js';
import { rolloutAgentGroups } from '../../dist/src/gateway/agent.js';
const [,, STEPS = '10', LR = '5e-4', SFT = '25', IMAGES = '4', EXTRA = ''] = process.argv;
const dir = path.resolve('out', 'agent-reward', 'synth'); mkdirSync(dir, { recursive: true });
const train = [];
let cur = '';
for await (const { sample, png } of synthSamples({ images: +IMAGES, questionsPerImage: 2, seed: 1, difficulty: 'easy', shapeCount: [1, 1], shapeSize: [0.16, 0.22], families: ['color', 'shape'] })) {
  if (png) { cur = path.resolve(dir, `${sample.id.replace(/[^A-Za-z0-9._-]/g, '_')}.png`); writeFileSync(cur, png); }
  train.push({ ...sample, imagePath: cur });
}
const model = await loadModel(DEFAULT_MODEL_DIR, { threads: 2 });
const tokenizer = VlmTokenizer.load(DEFAULT_MODEL_DIR);
const proc = new Qwen2VLImageProcessor();
if (+SFT > 0) {
  const tr = new Trainer({ model, tokenizer, train, rewards: [vqaAccuracy()], recordFacts: false, loadImages: async (s) => { const r = await proc.process(s.imagePath); return [{ pixels: r.pixels, gridThw: r.gridThw }]; } });
  const m = await tr.sft({ steps: +SFT, batchSize: 16, learningRate: 2e-3, warmupSteps: 5 });
  console.log('sft', m[0].loss.toFixed(3), '->', m.at(-1).loss.toFixed(3));
}
const env = Object.fromEntries(EXTRA.split(',').filter(Boolean).map((kv) => kv.split('=')));
const training = await AgentTraining.start({ model, tokenizer, train, agent: { command: 'node dist/examples/agents/vqa-agent.js', env, concurrency: 8 },
  config: { promptsPerStep: +(process.env.P ?? 4), numGenerations: +(process.env.G ?? 4), learningRate: +LR, epsilonHigh: 0.28, seed: 0 } });
const agent = { command: 'node dist/examples/agents/vqa-agent.js', env, concurrency: 8 };
const evaluate = async (name) => { const gs = await rolloutAgentGroups(training.gateway, train, 6, agent, { rolloutPrefix: name }); const r = gs.flatMap((g) => g.attempts.map((a) => a.reward ?? 0)); for (const g of gs) training.gateway.release(g.rolloutId); console.log(`${name}: reward ${(r.reduce((a, b) => a + b, 0) / r.length).toFixed(3)} over ${r.length} attempts; per task ` + gs.map((g) => `${g.sample.answer}:${(g.attempts.reduce((a, x) => a + (x.reward ?? 0), 0) / g.attempts.length).toFixed(2)}`).join(' ')); };
await evaluate('before');
await training.run(+STEPS, (o) => {
  const m = o.metrics;
  const groups = o.groups.map((g) => `${g.sample.answer}:` + g.attempts.map((a) => { try { const j = JSON.parse(a.stdoutTail.trim()); return `${j.first ?? ''}/${j.checked ?? ''}/${j.final}=${j.reward}`; } catch { return 'x'; } }).join(' '));
  console.log(`step ${m.step} reward ${m.rewardMean.toFixed(3)} turns ${m.turnsMean.toFixed(2)} upd ${m.update.updates} pol ${m.update.policyTokens} loss ${m.update.loss.toFixed(4)} | ${groups.join(' | ')}`);
});
await evaluate('after');
await training.close();
model.dispose();
