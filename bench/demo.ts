/**
 * The demo's numbers: held-out accuracy (official VQA metric) after the SFT warm start and after
 * GRPO, their difference and ratio, wall and CPU time against the 5-minute budget; the demo's own
 * image check (every held-out question shown another question's image); and the control — the
 * same recipe run again with every image blank, so only the question is left to learn from. The
 * gap between the two GRPO gains is what the policy learned by looking.
 *
 *   npm run build && node dist/bench/demo.js [--threads N] [--seed S] [--no-control]
 */
import { parseArgs } from 'node:util';
import path from 'node:path';
import { runDemo, type DemoResult } from '../src/cli/demo.js';

const { values: args } = parseArgs({
  options: {
    threads: { type: 'string' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'out/bench-demo' },
    'no-control': { type: 'boolean', default: false },
  },
});
const common = {
  seed: Number(args.seed),
  threads: args.threads === undefined ? undefined : Number(args.threads),
  quiet: true,
};
const silent = { out: () => {}, err: () => {} };

const cpu0 = process.cpuUsage();
const result = await runDemo({ ...common, out: path.join(args.out, 'images') }, silent);
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
let control: DemoResult | undefined;
if (!args['no-control'])
  control = await runDemo({ ...common, out: path.join(args.out, 'blank-images'), blankImages: true }, silent);

const pct = (x: number) => `${x.toFixed(2)}%`;
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)}`;
const w = result.warmStart.overall,
  g = result.grpo.overall;
const line = (k: string, v: string) => process.stdout.write(`${k.padEnd(36)} ${v}\n`);
line('warm-start accuracy (baseline)', `${pct(w)}  ${JSON.stringify(result.warmStart.perAnswerType)}`);
line('after GRPO', `${pct(g)}  ${JSON.stringify(result.grpo.perAnswerType)}`);
line('GRPO gain', `${signed(g - w)} points (goal ≥ +10), ratio ${(g / Math.max(w, 1e-9)).toFixed(2)}×`);
line(
  "shown another question's image",
  `warm start ${pct(result.warmStartMismatched!.overall)}, after GRPO ${pct(result.grpoMismatched!.overall)} ` +
    `(the trained policy loses ${(g - result.grpoMismatched!.overall).toFixed(2)} points without its own image)`,
);
if (control) {
  const cw = control.warmStart.overall,
    cg = control.grpo.overall;
  line(
    'control: every image blank',
    `warm start ${pct(cw)}, after GRPO ${pct(cg)} (GRPO gain ${signed(cg - cw)} points from the question alone)`,
  );
  line('gain owed to the image', `${signed(g - w - (cg - cw))} points (GRPO gain with images − without)`);
}
line('wall time', `${result.seconds.toFixed(1)} s (goal ≤ 300 s: ${(result.seconds / 300).toFixed(2)} of the budget)`);
line(
  'CPU time (this process)',
  `${cpuSeconds.toFixed(1)} s (${(cpuSeconds / result.seconds).toFixed(2)} cores busy on average)`,
);
