/**
 * Writes the embedded default model and tokenizer (src/model/default.ts) to a folder:
 *
 *     npm run build && node dist/src/model/write-default.js [outDir]
 *
 * A script of its own, not a "run when main" block in default.ts: a bundle that includes
 * default.ts (the GPU machine's packs) would otherwise regenerate the assets when it is run.
 */
import { DEFAULT_MODEL_DIR, writeDefaultAssets } from './default.js';

const out = process.argv[2] ?? DEFAULT_MODEL_DIR;
const r = await writeDefaultAssets(out);
process.stdout.write(`wrote ${out}: vocabulary ${r.vocabSize}, ${r.parameters.toLocaleString('en-US')} parameters\n`);
