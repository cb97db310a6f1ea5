/** `vqalab check-parity DIR`: run every registered parity checker on every case under DIR. */
import type { Command } from './command.js';
import { UsageError } from '../util/errors.js';
import { formatParityReport, runParity } from '../parity/run.js';
import { checkers } from '../parity/checkers.js';

const usage = `Usage: vqalab check-parity DIR [options]

Checks our outputs against reference outputs made by transformers. Every folder under DIR that
holds a meta.json is a case; each registered checker that applies to a case measures its errors.
Prints one line per case, then the worst errors; exits 1 when any is beyond tolerance.

Checkers: ${checkers.map((c) => c.name).join(', ')}

Options:
  --device DEV      where computing checkers run: cpu (default), cuda, cuda:N
  --set KEY=VALUE   a checker setting, e.g. --set vision.resample=sharp-cubic (repeatable)
  --top N           how many of the worst measurements to print (default 10)
  --json            print the results as JSON instead
  -h, --help        this help
`;

export const checkParityCommand: Command = {
  name: 'check-parity',
  summary: 'compare our outputs with transformers fixtures (vision processor, engine)',
  usage,
  async run(argv) {
    let dir: string | undefined;
    let device = 'cpu',
      top = 10,
      json = false;
    const settings: Record<string, string> = {};
    for (let i = 0; i < argv.length; i++) {
      const a = argv[i]!;
      const value = () => {
        const v = argv[++i];
        if (v === undefined) throw new UsageError(`${a} needs a value`);
        return v;
      };
      if (a === '--device') device = value();
      else if (a === '--top') {
        const v = value();
        top = Number(v);
        if (!Number.isInteger(top) || top < 0) throw new UsageError(`--top expects a non-negative integer, got "${v}"`);
      } else if (a === '--set') {
        const v = value();
        const eq = v.indexOf('=');
        if (eq <= 0) throw new UsageError(`--set expects KEY=VALUE, got "${v}"`);
        settings[v.slice(0, eq)] = v.slice(eq + 1);
      } else if (a === '--json') json = true;
      else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}; run "vqalab check-parity --help"`);
      else if (dir === undefined) dir = a;
      else throw new UsageError(`one DIR expected, got "${dir}" and "${a}"`);
    }
    if (dir === undefined) throw new UsageError('missing DIR (the folder holding the parity cases)');
    if (!/^(cpu|cuda(:\d+)?)$/.test(device))
      throw new UsageError(`--device expects cpu, cuda or cuda:N, got "${device}"`);
    let results;
    try {
      results = await runParity(dir, { device, settings });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    process.stdout.write(json ? JSON.stringify(results, null, 1) + '\n' : formatParityReport(results, top));
    return results.every((r) => r.ok) ? 0 : 1;
  },
};
